//! The BERT encoder of all-MiniLM-L6-v2, written for this model on the CPU.
//!
//! Why not a general tensor library: profiled per op, a general engine spent most of a forward
//! pass outside its matrix products (single-threaded elementwise ops, layout copies for the
//! attention heads, padding). Here:
//!
//! - the texts of a pass are packed one after another, never padded: a 10-token text beside a
//!   250-token one costs 10 tokens, and no attention mask is needed;
//! - every dense product is one `gemm` call over all tokens of the pass, on every core, with
//!   the bias written first and accumulated into (no second pass), using AVX-512 where the CPU
//!   has it;
//! - attention reads Q, K and V in place from the fused QKV product through strides (no head
//!   transposes) and runs one task per text and head across the cores; only one text-head's
//!   L×L scores exist at a time per core;
//! - GELU (exact, erf), softmax and layer norm are single passes, vectorised for the CPU found
//!   at run time and split by rows across the cores.
//!
//! The vectors match the general implementation's to cosine ≥ 0.9999 (tested against the
//! committed reference vectors, and in `make bench` on the evaluation set's documents).

#![allow(unsafe_code)]

use gemm::{Parallelism, gemm};
use rayon::prelude::*;
use safetensors::SafeTensors;

/// The shape this encoder implements (read from the model's `config.json`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Config {
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    #[serde(default = "gelu")]
    pub hidden_act: String,
}

fn gelu() -> String {
    "gelu".into()
}

struct Layer {
    /// Query, key and value side by side: `[hidden, 3 × hidden]`, row-major (input × output).
    qkv_w: Vec<f32>,
    qkv_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    ln1_g: Vec<f32>,
    ln1_b: Vec<f32>,
    up_w: Vec<f32>,
    up_b: Vec<f32>,
    down_w: Vec<f32>,
    down_b: Vec<f32>,
    ln2_g: Vec<f32>,
    ln2_b: Vec<f32>,
}

/// How the dense products run: AVX-512 panels over weights packed at load where the CPU has
/// AVX-512, the general `gemm` kernels (AVX2 or baseline) elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Panels,
    Portable,
}

impl Kernel {
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            return Kernel::Panels;
        }
        Kernel::Portable
    }
}

pub struct Encoder {
    kernel: Kernel,
    hidden: usize,
    heads: usize,
    inter: usize,
    eps: f32,
    max_positions: usize,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    ln_g: Vec<f32>,
    ln_b: Vec<f32>,
    layers: Vec<Layer>,
}

/// One text of a pass: its word-piece ids and token types.
pub struct Text<'a> {
    pub ids: &'a [u32],
    pub types: &'a [u32],
}

type BoxError = crate::BoxError;

/// The tensor `name` (or `bert.name`, as some exports prefix it).
fn view<'a>(
    st: &'a SafeTensors<'a>,
    name: &str,
) -> Result<safetensors::tensor::TensorView<'a>, BoxError> {
    Ok(st
        .tensor(name)
        .or_else(|_| st.tensor(&format!("bert.{name}")))
        .map_err(|e| format!("{name}: {e}"))?)
}

/// An embedding table: any number of rows of `width`.
fn table(st: &SafeTensors<'_>, name: &str, width: usize) -> Result<Vec<f32>, BoxError> {
    let rows = view(st, name)?.shape().first().copied().unwrap_or(0);
    tensor(st, name, &[rows, width])
}

fn tensor(st: &SafeTensors<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>, BoxError> {
    let view = view(st, name)?;
    if view.dtype() != safetensors::Dtype::F32 {
        return Err(format!("{name}: expected f32, found {:?}", view.dtype()).into());
    }
    if view.shape() != shape {
        return Err(format!("{name}: expected shape {shape:?}, found {:?}", view.shape()).into());
    }
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// A PyTorch `Linear` weight (`[out, in]`) as `[in, out]` row-major, the layout the products
/// read fastest.
fn linear(st: &SafeTensors<'_>, name: &str, out: usize, inp: usize) -> Result<Vec<f32>, BoxError> {
    let w = tensor(st, name, &[out, inp])?;
    let mut t = vec![0.0; w.len()];
    for o in 0..out {
        for i in 0..inp {
            t[i * out + o] = w[o * inp + i];
        }
    }
    Ok(t)
}

impl Encoder {
    pub fn load(config: &Config, weights: &[u8], kernel: Kernel) -> Result<Self, BoxError> {
        if config.hidden_act != "gelu" {
            return Err(format!("activation {} is not supported", config.hidden_act).into());
        }
        if !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
        {
            return Err("hidden_size is not a multiple of num_attention_heads".into());
        }
        let st = SafeTensors::deserialize(weights)?;
        let (h, i) = (config.hidden_size, config.intermediate_size);
        // The panels need AVX-512 and every output width a whole number of panels.
        let kernel =
            if kernel == Kernel::detect() && h.is_multiple_of(PANEL) && i.is_multiple_of(PANEL) {
                kernel
            } else {
                Kernel::Portable
            };
        let pack = |w: Vec<f32>, k: usize, n: usize| match kernel {
            Kernel::Panels => pack(&w, k, n),
            Kernel::Portable => w,
        };
        let e = "embeddings.";
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for n in 0..config.num_hidden_layers {
            let l = format!("encoder.layer.{n}.");
            let a = format!("{l}attention.");
            let (q, k, v) = (
                linear(&st, &format!("{a}self.query.weight"), h, h)?,
                linear(&st, &format!("{a}self.key.weight"), h, h)?,
                linear(&st, &format!("{a}self.value.weight"), h, h)?,
            );
            let mut qkv_w = Vec::with_capacity(3 * h * h);
            for row in 0..h {
                for part in [&q, &k, &v] {
                    qkv_w.extend_from_slice(&part[row * h..(row + 1) * h]);
                }
            }
            let mut qkv_b = tensor(&st, &format!("{a}self.query.bias"), &[h])?;
            qkv_b.extend(tensor(&st, &format!("{a}self.key.bias"), &[h])?);
            qkv_b.extend(tensor(&st, &format!("{a}self.value.bias"), &[h])?);
            let qkv_w = pack(qkv_w, h, 3 * h);
            layers.push(Layer {
                qkv_w,
                qkv_b,
                out_w: pack(linear(&st, &format!("{a}output.dense.weight"), h, h)?, h, h),
                out_b: tensor(&st, &format!("{a}output.dense.bias"), &[h])?,
                ln1_g: tensor(&st, &format!("{a}output.LayerNorm.weight"), &[h])?,
                ln1_b: tensor(&st, &format!("{a}output.LayerNorm.bias"), &[h])?,
                up_w: pack(
                    linear(&st, &format!("{l}intermediate.dense.weight"), i, h)?,
                    h,
                    i,
                ),
                up_b: tensor(&st, &format!("{l}intermediate.dense.bias"), &[i])?,
                down_w: pack(linear(&st, &format!("{l}output.dense.weight"), h, i)?, i, h),
                down_b: tensor(&st, &format!("{l}output.dense.bias"), &[h])?,
                ln2_g: tensor(&st, &format!("{l}output.LayerNorm.weight"), &[h])?,
                ln2_b: tensor(&st, &format!("{l}output.LayerNorm.bias"), &[h])?,
            });
        }
        Ok(Self {
            kernel,
            hidden: h,
            heads: config.num_attention_heads,
            inter: i,
            eps: config.layer_norm_eps as f32,
            max_positions: config.max_position_embeddings,
            word: table(&st, &format!("{e}word_embeddings.weight"), h)?,
            position: tensor(
                &st,
                &format!("{e}position_embeddings.weight"),
                &[config.max_position_embeddings, h],
            )?,
            token_type: table(&st, &format!("{e}token_type_embeddings.weight"), h)?,
            ln_g: tensor(&st, &format!("{e}LayerNorm.weight"), &[h])?,
            ln_b: tensor(&st, &format!("{e}LayerNorm.bias"), &[h])?,
            layers,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Mean-pooled (over each text's tokens), L2-normalised sentence vectors, one per text.
    pub fn embed(&self, texts: &[Text<'_>]) -> Result<Vec<Vec<f32>>, BoxError> {
        let h = self.hidden;
        let vocab = self.word.len() / h;
        let types = self.token_type.len() / h;
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        offsets.push(0usize);
        for t in texts {
            if t.ids.len() > self.max_positions {
                return Err(format!(
                    "a text of {} tokens exceeds the model's {} positions",
                    t.ids.len(),
                    self.max_positions
                )
                .into());
            }
            if let Some(&bad) = t.ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(format!("token id {bad} is outside the vocabulary").into());
            }
            if let Some(&bad) = t.types.iter().find(|&&ty| ty as usize >= types) {
                return Err(format!("token type {bad} is outside the model's types").into());
            }
            offsets.push(offsets.last().copied().unwrap_or(0) + t.ids.len());
        }
        let total = offsets.last().copied().unwrap_or(0);
        if total == 0 {
            return Ok(texts.iter().map(|_| vec![0.0; h]).collect());
        }

        // Embeddings: word + position + token type, then layer norm.
        let mut x = vec![0.0f32; total * h];
        for (t, text) in texts.iter().enumerate() {
            for (p, (&id, &ty)) in text.ids.iter().zip(text.types).enumerate() {
                let row = &mut x[(offsets[t] + p) * h..(offsets[t] + p + 1) * h];
                let w = &self.word[id as usize * h..(id as usize + 1) * h];
                let pos = &self.position[p * h..(p + 1) * h];
                let tt = &self.token_type[ty as usize * h..(ty as usize + 1) * h];
                for j in 0..h {
                    row[j] = w[j] + pos[j] + tt[j];
                }
            }
        }
        rows_par(&mut x, h, |row| {
            layer_norm(row, &self.ln_g, &self.ln_b, self.eps)
        });

        let mut qkv = vec![0.0f32; total * 3 * h];
        let mut ctx = vec![0.0f32; total * h];
        let mut attn = vec![0.0f32; total * h];
        let mut up = vec![0.0f32; total * self.inter];
        for layer in &self.layers {
            self.dense(&x, h, &layer.qkv_w, &layer.qkv_b, &mut qkv, false);
            self.attention(&qkv, &offsets, &mut ctx);
            self.dense(&ctx, h, &layer.out_w, &layer.out_b, &mut attn, false);
            // x = LayerNorm(x + attention)
            rows_par2(&mut x, &attn, h, |row, add| {
                add_in_place(row, add);
                layer_norm(row, &layer.ln1_g, &layer.ln1_b, self.eps);
            });
            self.dense(&x, h, &layer.up_w, &layer.up_b, &mut up, true);
            self.dense(
                &up,
                self.inter,
                &layer.down_w,
                &layer.down_b,
                &mut attn,
                false,
            );
            rows_par2(&mut x, &attn, h, |row, add| {
                add_in_place(row, add);
                layer_norm(row, &layer.ln2_g, &layer.ln2_b, self.eps);
            });
        }

        // Mean over each text's tokens, then unit length.
        Ok(offsets
            .windows(2)
            .map(|w| {
                let mut mean = vec![0.0f32; h];
                for row in x[w[0] * h..w[1] * h].chunks_exact(h) {
                    add_in_place(&mut mean, row);
                }
                let n = (w[1] - w[0]).max(1) as f32;
                let norm = (mean.iter().map(|v| (v / n) * (v / n)).sum::<f32>())
                    .sqrt()
                    .max(1e-12);
                mean.iter().map(|v| v / n / norm).collect()
            })
            .collect())
    }

    /// Multi-head self-attention of every text on its own tokens, one task per text and head.
    fn attention(&self, qkv: &[f32], offsets: &[usize], ctx: &mut [f32]) {
        let h = self.hidden;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let tasks: Vec<(usize, usize)> = (0..offsets.len() - 1)
            .flat_map(|t| (0..self.heads).map(move |head| (t, head)))
            .collect();
        let out = SendPtr(ctx.as_mut_ptr());
        let qkv = SendPtr(qkv.as_ptr() as *mut f32);
        let run = |scores: &mut Vec<f32>, &(t, head): &(usize, usize)| {
            let (start, len) = (offsets[t], offsets[t + 1] - offsets[t]);
            if len == 0 {
                return;
            }
            scores.clear();
            scores.resize(len * len, 0.0);
            let row = 3 * h as isize;
            // SAFETY: every pointer below stays inside `qkv` (rows start..start+len, columns
            // of this head in the Q, K or V third) or `ctx` (same rows, this head's columns);
            // tasks write disjoint (rows, head) blocks of `ctx`, and `qkv` is only read.
            unsafe {
                let q = qkv.get().add(start * 3 * h + head * d);
                let k = q.add(h);
                let v = q.add(2 * h);
                // scores[L×L] = scale · Q[L×d] · Kᵀ[d×L]
                gemm(
                    len,
                    len,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    len as isize,
                    false,
                    q,
                    1,
                    row,
                    k,
                    row,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
                for r in scores.chunks_exact_mut(len) {
                    softmax_in_place(r);
                }
                // ctx[L×d] = P[L×L] · V[L×d]
                gemm(
                    len,
                    d,
                    len,
                    out.get().add(start * h + head * d),
                    1,
                    h as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    len as isize,
                    v,
                    1,
                    row,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        };
        if offsets.last().copied().unwrap_or(0) < PAR_MIN_ROWS {
            let mut scores = Vec::new();
            tasks.iter().for_each(|task| run(&mut scores, task));
        } else {
            tasks.par_iter().for_each_init(Vec::new, run);
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to hand disjoint blocks of one buffer to the attention tasks (see there).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl Encoder {
    /// `out[rows × n] = x[rows × k] · w[k × n] + bias`, then GELU if `gelu`, on every core.
    fn dense(&self, x: &[f32], k: usize, w: &[f32], bias: &[f32], out: &mut [f32], gelu: bool) {
        let n = bias.len();
        let rows = x.len() / k;
        let out = &mut out[..rows * n];
        assert_eq!(w.len(), k * n, "weight shape");
        for row in out.chunks_exact_mut(n) {
            row.copy_from_slice(bias);
        }
        #[cfg(target_arch = "x86_64")]
        if self.kernel == Kernel::Panels {
            let panels = n / PANEL;
            let threads = rayon::current_num_threads().max(1);
            // Whole panels per task (each panel's weights read once per task), row blocks only
            // when there are many rows, so both cores get equal shares.
            let row_blocks = rows.div_ceil(ROW_BLOCK);
            let per_task = panels.div_ceil(threads);
            let panel_tasks = panels.div_ceil(per_task);
            let out_ptr = SendPtr(out.as_mut_ptr());
            let task = |t: usize| {
                let (pt, block) = (t % panel_tasks, t / panel_tasks);
                let r0 = block * ROW_BLOCK;
                let r1 = (r0 + ROW_BLOCK).min(rows);
                let p0 = pt * per_task;
                let p1 = (p0 + per_task).min(panels);
                // SAFETY: avx512f is present (Kernel::Panels is chosen only then); each task
                // writes only its own rows and column panels of `out`.
                unsafe {
                    panels::dense_panels(
                        r1 - r0,
                        k,
                        n,
                        x.as_ptr().add(r0 * k),
                        w.as_ptr(),
                        out_ptr.get().add(r0 * n),
                        p0,
                        p1,
                        gelu,
                    )
                };
            };
            if threads == 1 || rows * n * k < 1 << 16 {
                (0..panel_tasks * row_blocks).for_each(task);
            } else {
                (0..panel_tasks * row_blocks).into_par_iter().for_each(task);
            }
            return;
        }
        let threads = rayon::current_num_threads();
        // SAFETY: `out` is rows×n, `x` rows×k and `w` k×n, all row-major and contiguous, as the
        // strides below say; the slices outlive the call.
        unsafe {
            gemm(
                rows,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                true,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                if threads > 1 {
                    Parallelism::Rayon(threads)
                } else {
                    Parallelism::None
                },
            );
        }
        if gelu {
            rows_par(out, n, gelu_in_place);
        }
    }
}

/// Rows of `x` per task of the panel kernel when there are many.
const ROW_BLOCK: usize = 64;
/// `w` (`[k, n]` row-major) as panels of [`PANEL`] columns, each `[k, PANEL]` contiguous.
fn pack(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(w.len());
    for p in 0..n / PANEL {
        for kk in 0..k {
            out.extend_from_slice(&w[kk * n + p * PANEL..kk * n + (p + 1) * PANEL]);
        }
    }
    out
}
/// Columns per panel: four AVX-512 registers.
const PANEL: usize = 64;
/// Rows of `w` per block of a panel: 128 × 64 floats, 32 KB, fit in L1.
const K_BLOCK: usize = 128;

#[cfg(target_arch = "x86_64")]
mod panels {
    use super::{K_BLOCK, PANEL};
    use std::arch::x86_64::*;

    /// Rows of `x` per register tile: 6 rows × 4 registers = 24 accumulators, leaving 8 of
    /// the 32 registers for the 4 loads of `w` and the broadcast of `x`.
    const TILE_ROWS: usize = 6;
    const PREFETCH_ROWS: usize = 16;

    /// Adds `x · w` to `out` for the column panels `p0..p1`: `w` is packed by [`super::pack`],
    /// so each panel's rows are read in order, a block of [`K_BLOCK`] of them (32 KB) staying
    /// in L1 while every row of `x` passes over it. With `gelu`, the panel's finished columns
    /// go through GELU before they leave the cache.
    ///
    /// # Safety
    /// The CPU has avx512f; `x` is rows×k, `w` k×n packed and `out` rows×n, contiguous.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn dense_panels(
        rows: usize,
        k: usize,
        n: usize,
        x: *const f32,
        w: *const f32,
        out: *mut f32,
        p0: usize,
        p1: usize,
        gelu: bool,
    ) {
        unsafe {
            for p in p0..p1 {
                let j = p * PANEL;
                let panel = w.add(j * k);
                let mut k0 = 0;
                while k0 < k {
                    let k1 = (k0 + K_BLOCK).min(k);
                    let mut r = 0;
                    while rows - r >= TILE_ROWS {
                        let (xr, o) = (x.add(r * k), out.add(r * n + j));
                        if r == 0 {
                            tile::<TILE_ROWS, true>(k, n, xr, panel, o, k0, k1);
                        } else {
                            tile::<TILE_ROWS, false>(k, n, xr, panel, o, k0, k1);
                        }
                        r += TILE_ROWS;
                    }
                    let (xr, o) = (x.add(r * k), out.add(r * n + j));
                    match (rows - r, r == 0) {
                        (1, true) => tile::<1, true>(k, n, xr, panel, o, k0, k1),
                        (2, true) => tile::<2, true>(k, n, xr, panel, o, k0, k1),
                        (3, true) => tile::<3, true>(k, n, xr, panel, o, k0, k1),
                        (4, true) => tile::<4, true>(k, n, xr, panel, o, k0, k1),
                        (5, true) => tile::<5, true>(k, n, xr, panel, o, k0, k1),
                        (1, false) => tile::<1, false>(k, n, xr, panel, o, k0, k1),
                        (2, false) => tile::<2, false>(k, n, xr, panel, o, k0, k1),
                        (3, false) => tile::<3, false>(k, n, xr, panel, o, k0, k1),
                        (4, false) => tile::<4, false>(k, n, xr, panel, o, k0, k1),
                        (5, false) => tile::<5, false>(k, n, xr, panel, o, k0, k1),
                        _ => {}
                    }
                    k0 = k1;
                }
                if gelu {
                    for r in 0..rows {
                        super::gelu_in_place(std::slice::from_raw_parts_mut(
                            out.add(r * n + j),
                            PANEL,
                        ));
                    }
                }
            }
        }
    }

    /// `R` rows × one panel, for the steps `k0..k1` of `k`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const FIRST: bool>(
        k: usize,
        n: usize,
        x: *const f32,
        panel: *const f32,
        out: *mut f32,
        k0: usize,
        k1: usize,
    ) {
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            for (i, acc_row) in acc.iter_mut().enumerate() {
                for (c, a) in acc_row.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(out.add(i * n + 16 * c));
                }
            }
            for kk in k0..k1 {
                let wr = panel.add(kk * PANEL);
                if FIRST {
                    // The first tile over this block of `w` reads it from memory: ask for the
                    // rows just ahead into L1, and the next block into L2 so that the next
                    // block's first tile finds it there while the later tiles here compute.
                    let near = wr.add(PREFETCH_ROWS * PANEL) as *const i8;
                    let next = wr.add(K_BLOCK * PANEL) as *const i8;
                    for line in 0..4 {
                        _mm_prefetch::<_MM_HINT_T0>(near.add(64 * line));
                        _mm_prefetch::<_MM_HINT_T1>(next.add(64 * line));
                    }
                }
                let wv = [
                    _mm512_loadu_ps(wr),
                    _mm512_loadu_ps(wr.add(16)),
                    _mm512_loadu_ps(wr.add(32)),
                    _mm512_loadu_ps(wr.add(48)),
                ];
                for (i, acc_row) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*x.add(i * k + kk));
                    for (a, wc) in acc_row.iter_mut().zip(wv) {
                        *a = _mm512_fmadd_ps(b, wc, *a);
                    }
                }
            }
            for (i, acc_row) in acc.iter().enumerate() {
                for (c, a) in acc_row.iter().enumerate() {
                    _mm512_storeu_ps(out.add(i * n + 16 * c), *a);
                }
            }
        }
    }
}

/// Below this many tokens a step runs on one core: handing it over would cost more.
const PAR_MIN_ROWS: usize = 8;
/// Rows per parallel task: enough work per task that splitting pays.
const ROWS_PER_TASK: usize = 16;

fn rows_par(data: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync) {
    if data.len() < width * PAR_MIN_ROWS {
        data.chunks_exact_mut(width).for_each(f);
        return;
    }
    data.par_chunks_mut(width * ROWS_PER_TASK)
        .for_each(|block| block.chunks_exact_mut(width).for_each(&f));
}

fn rows_par2(data: &mut [f32], other: &[f32], width: usize, f: impl Fn(&mut [f32], &[f32]) + Sync) {
    if data.len() < width * PAR_MIN_ROWS {
        for (row, o) in data.chunks_exact_mut(width).zip(other.chunks_exact(width)) {
            f(row, o);
        }
        return;
    }
    data.par_chunks_mut(width * ROWS_PER_TASK)
        .zip(other.par_chunks(width * ROWS_PER_TASK))
        .for_each(|(block, other)| {
            for (row, o) in block.chunks_exact_mut(width).zip(other.chunks_exact(width)) {
                f(row, o);
            }
        });
}

/// Defines `$name` as a function compiled three times (AVX-512, AVX2+FMA, baseline) from one
/// body and dispatched by what the CPU has, so the loops vectorise without building the whole
/// binary for one CPU.
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
                fn v4($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512dq")
                {
                    // SAFETY: the CPU has the features `v4` is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `v3` is compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

const LANES: usize = 16;

#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

multiversion! {
    fn add_in_place(x: &mut [f32], y: &[f32]) {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    }
}

multiversion! {
    /// Layer norm of one row, in place (biased variance, as BERT).
    fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = x.len() as f32;
        let mean = sum(x) / n;
        for v in x.iter_mut() {
            *v -= mean;
        }
        let mut acc = [0.0f32; LANES];
        let chunks = x.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..LANES {
                acc[i] += c[i] * c[i];
            }
        }
        let var = (acc.iter().sum::<f32>() + rest.iter().map(|v| v * v).sum::<f32>()) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in x.iter_mut().zip(gamma).zip(beta) {
            *v = *v * inv * g + b;
        }
    }
}

multiversion! {
    /// Softmax of one row of scores, in place.
    fn softmax_in_place(x: &mut [f32]) {
        let m = max(x);
        for v in x.iter_mut() {
            *v = exp(*v - m);
        }
        let inv = 1.0 / sum(x);
        for v in x.iter_mut() {
            *v *= inv;
        }
    }
}

multiversion! {
    /// The exact GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))`, in place.
    fn gelu_in_place(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// `eˣ` for the softmax: range reduction to `r ∈ [-ln2/2, ln2/2]`, a degree-6 polynomial
/// (relative error below 2e-7), and the power of two built in the exponent bits. Branch-free,
/// so the loops that call it vectorise.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let exponent = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    p * f32::from_bits(((exponent + 127) << 23) as u32)
}

/// `erf(x)`: the rational approximation Eigen uses for `float` (error a few ulp), clamped to
/// ±4 where erf is ±1 in `f32`. Branch-free.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_1e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_2e-3;
    q = x2 * q + -1.426_473_9e-2;
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_match_the_standard_library() {
        let mut worst_exp = 0.0f64;
        let mut worst_erf = 0.0f64;
        for i in -20_000..=2_000 {
            let x = i as f32 / 200.0; // -100 .. 10
            let want = (x as f64).exp();
            if want > 1e-30 {
                worst_exp = worst_exp.max(((exp(x) as f64 - want) / want).abs());
            }
        }
        for i in -1_000..=1_000 {
            let x = i as f32 / 100.0;
            let want = libm_erf(x as f64);
            worst_erf = worst_erf.max((erf(x) as f64 - want).abs());
        }
        assert!(worst_exp < 5e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 5e-7, "erf absolute error {worst_erf}");
        assert_eq!(exp(-1000.0), exp(-87.0));
    }

    /// erf by its series / continued fraction in f64, independent of the approximation above.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 3.0 {
            // Maclaurin series: erf x = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
            let mut term = x;
            let mut total = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                total += term / (2 * n + 1) as f64;
            }
            total * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc by its continued fraction, accurate far out
            let mut f = 0.0;
            for k in (1..200).rev() {
                f = (k as f64 / 2.0) / (x.abs() + f);
            }
            let erfc = (-x * x).exp() / std::f64::consts::PI.sqrt() / (x.abs() + f);
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn softmax_and_layer_norm_are_exact_enough() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 9.0).collect();
        let want: Vec<f64> = {
            let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        softmax_in_place(&mut row);
        for (a, b) in row.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
        let mut x: Vec<f32> = (0..384).map(|i| (i as f32).cos() * 3.0 + 1.0).collect();
        let g = vec![2.0; 384];
        let b = vec![0.5; 384];
        layer_norm(&mut x, &g, &b, 1e-12);
        let mean: f32 = x.iter().map(|v| (v - 0.5) / 2.0).sum::<f32>() / 384.0;
        let var: f32 = x.iter().map(|v| ((v - 0.5) / 2.0).powi(2)).sum::<f32>() / 384.0;
        assert!(
            mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
            "{mean} {var}"
        );
    }
}
