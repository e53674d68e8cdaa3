//! ctl: the operator's command line. Reads the same configuration (.env, environment) as the
//! services.

use base64::Engine;
use clap::{Parser, Subcommand};
use common::auth::Tokens;
use common::bus::Bus;
use common::ids::Source;
use common::intake::Limits;
use common::{Config, UserId};
use migration::MigratorTrait;
use rand::RngCore;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "ctl",
    about = "Operate the assistant backend: tokens, streams, replay, dead letters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the settings in force (defaults, CONFIG_FILE, .env, environment; the environment
    /// wins), secrets shown only as set or not.
    Config,
    /// Apply database migrations.
    Migrate,
    /// JetStream topology.
    Nats {
        #[command(subcommand)]
        command: NatsCommand,
    },
    /// Print an API token for a user, creating the user if needed.
    Token {
        #[arg(long)]
        email: String,
        /// Lifetime in days (default TOKEN_TTL_DAYS).
        #[arg(long)]
        days: Option<i64>,
    },
    /// Sign a user out everywhere: every API token issued so far and every browser session
    /// stop working (a stolen token, a lost laptop).
    Revoke {
        /// The user's email or id.
        #[arg(long)]
        user: String,
    },
    /// Streams and consumers: messages, lag, unacknowledged, redelivered.
    Streams {
        #[arg(long)]
        json: bool,
    },
    /// Republish one user's messages from a stream, so consumers process them again.
    Replay {
        /// INGEST, WEBHOOKS, EVENTS, SYNC or TOOLS.
        #[arg(long)]
        stream: String,
        /// The user's email or id.
        #[arg(long)]
        user: String,
        /// Only messages stored at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Chunk and embed documents again (one user's, or everyone's), on the bulk lane: after an
    /// upgrade that changes what is indexed, so documents indexed before catch up.
    Reindex {
        /// The user's email or id; everyone's when not given.
        #[arg(long)]
        user: Option<String>,
    },
    /// Search one user's documents as they would (the same ranking as the API and the
    /// assistant's tools).
    Search {
        /// The user's email or id.
        #[arg(long)]
        user: String,
        /// What to look for.
        query: String,
        #[arg(long, default_value_t = 10)]
        top_k: u32,
        /// Only these sources, comma-separated.
        #[arg(long, value_delimiter = ',')]
        source: Vec<String>,
        /// Only these kinds, comma-separated.
        #[arg(long, value_delimiter = ',')]
        kind: Vec<String>,
    },
    /// Queue a sync of one connected resource for a user now (gmail, calendar, hubspot, slack).
    Sync {
        /// The user's email or id.
        #[arg(long)]
        user: String,
        resource: String,
    },
    /// Dead letters: messages a consumer gave up on.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Generic webhook endpoints (Standard Webhooks).
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Keys that encrypt provider tokens at rest.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Users' rules: list them, or backtest one over past events (dry run: nothing runs).
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Product intelligence: a user's themes; read a source or a time range again.
    Insights {
        #[command(subcommand)]
        command: InsightsCommand,
    },
    /// The demo tenant.
    Demo {
        #[command(subcommand)]
        command: DemoCommand,
    },
}

#[derive(Subcommand)]
enum InsightsCommand {
    /// A user's themes, most mentioned first.
    Themes {
        /// The user's email or id.
        #[arg(long)]
        user: String,
        /// `feature_request`, `bug`, `pain_point`, `praise` or `question`.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// Read a user's documents again (of one source, within a window) with the current
    /// classifier and settings; their items are derived again and replace the old ones.
    Reprocess {
        /// The user's email or id.
        #[arg(long)]
        user: String,
        #[arg(long)]
        source: Option<String>,
        /// Documents said at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Documents said before this time (RFC 3339).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Group a user's items into themes again, all at once (average link), as the pipeline
    /// does by itself every 10% more items; theme ids and titles stay where their items stay,
    /// and every curation (merge, split, move, rename, dismiss) is kept.
    #[command(alias = "recluster")]
    Regroup {
        /// The user's email or id.
        #[arg(long)]
        user: String,
        /// Average similarity that keeps two groups together; default the user's
        /// `theme_regroup` setting, else INSIGHTS_THEME_REGROUP.
        #[arg(long)]
        threshold: Option<f32>,
    },
    /// Try candidate settings on a window of stored messages: they are read again (by the
    /// embedding service, on the bulk lane) into shadow tables and grouped, and the report says
    /// what would change (items added, removed and of another kind; themes formed, merged and
    /// split; agreement with the live themes; curations kept only as constraints). Nothing
    /// live changes unless `--apply`.
    Preview {
        /// The user's email or id.
        #[arg(long)]
        user: String,
        /// Messages said at or after this time (RFC 3339).
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        /// Messages said before this time (RFC 3339).
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
        /// A setting to try, NAME=VALUE (repeat for several, and for several elements of a
        /// list): min_score, sources, channels, product_areas, theme_join, theme_regroup...
        #[arg(long = "setting")]
        settings: Vec<String>,
        /// Tier 2's model: `local` (the extractive classifier) or a model of the deployment's
        /// endpoint.
        #[arg(long)]
        model: Option<String>,
        /// Promote it once ready: the settings become the user's and the window's items and
        /// themes the preview's.
        #[arg(long)]
        apply: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// How long to wait for the report.
        #[arg(long, default_value_t = 3600)]
        wait_secs: u64,
    },
    /// Promote a ready preview (made by `preview` or the API).
    Apply {
        /// The user's email or id.
        #[arg(long)]
        user: String,
        /// The preview's id.
        #[arg(long)]
        preview: uuid::Uuid,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Every rule, or one user's.
    List {
        /// The user's email or id.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run a rule over the user's past events (the EVENTS stream keeps 14 days) and list what
    /// would have fired and why.
    Backtest {
        /// The user's email or id.
        #[arg(long)]
        user: String,
        rule: Uuid,
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum NatsCommand {
    /// Create or update every stream and consumer declared in nats/jetstream.toml.
    Apply,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters, newest first.
    List {
        /// Include those already requeued.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Show one dead letter with its payload.
    Show { id: i64 },
    /// Send a dead letter back to its subject.
    Requeue { id: i64 },
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Create an endpoint for a user and source; prints the whsec_ secret to give the sender.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        source: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a new key entry to put first in TOKEN_ENCRYPTION_KEYS.
    Generate,
    /// Re-encrypt every stored token not under the current (first) key.
    Rotate,
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Create the demo user, load its sample data and print its token.
    Load {
        #[arg(long, default_value = common::demo::ADVISOR_EMAIL)]
        email: String,
    },
    /// Create the product team's demo user (product intelligence on), load its customers,
    /// Slack feedback, call transcripts and emails, and print its token.
    LoadProduct {
        #[arg(long, default_value = common::demo::PRODUCT_EMAIL)]
        email: String,
    },
}

/// The intake limits the gateway applies, for documents ctl submits.
fn limits(config: &Config) -> Limits {
    Limits {
        max_batch: config.max_batch_documents,
        max_body_bytes: config.max_document_bytes,
    }
}

async fn bus(config: &Config) -> anyhow::Result<Bus> {
    Ok(Bus::connect(
        &config.nats_url,
        &config.nats_prefix,
        config.publish_timeout(),
    )
    .await?)
}

fn joining(config: &Config) -> db::insights::Joining {
    db::insights::Joining {
        join: config.insights_theme_join,
        ask: config.insights_theme_ask,
        regroup: config.insights_theme_regroup,
    }
}

async fn db(config: &Config) -> anyhow::Result<db::DatabaseConnection> {
    Ok(db::connect(&config.database_url, 2).await?)
}

async fn user_by(db: &db::DatabaseConnection, who: &str) -> anyhow::Result<UserId> {
    match Uuid::parse_str(who) {
        Ok(id) => Ok(UserId(id)),
        Err(_) => Ok(db::users::ensure(db, who).await?),
    }
}

fn token(config: &Config, user: UserId, email: &str, days: Option<i64>) -> anyhow::Result<String> {
    let ttl = chrono::Duration::days(days.unwrap_or(config.token_ttl_days));
    Ok(Tokens::from_config(config).issue(user, email, ttl)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dotenvy::dotenv().ok();
    let cli = Cli::parse();
    if let Command::Keys {
        command: KeysCommand::Generate,
    } = cli.command
    {
        // Needs no configuration: it is how a new deployment makes its first key.
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let id = format!("k{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
        println!(
            "{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        return Ok(());
    }
    let config = Config::load()?;
    match cli.command {
        Command::Config => {
            for (name, value) in config.redacted() {
                println!("{name}={value}");
            }
        }
        Command::Migrate => {
            let db = db(&config).await?;
            migration::Migrator::up(&db, None).await?;
            println!("migrations applied");
        }
        Command::Nats {
            command: NatsCommand::Apply,
        } => {
            let bus = bus(&config).await?;
            let topology = bus.apply_topology(&config).await?;
            println!(
                "applied {} streams and {} consumers",
                topology.streams.len(),
                topology.consumers.len()
            );
        }
        Command::Token { email, days } => {
            let db = db(&config).await?;
            let user = db::users::ensure(&db, &email).await?;
            println!("{}", token(&config, user, &email, days)?);
        }
        Command::Revoke { user } => {
            let db = db(&config).await?;
            let id = user_by(&db, &user).await?;
            db::users::revoke_everything(&db, id).await?;
            println!("every token and session of {user} revoked");
        }
        Command::Streams { json } => {
            let status = common::status::read(&bus(&config).await?).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!(
                    "{:<12} {:>10} {:>12} {:>10}",
                    "STREAM", "MESSAGES", "BYTES", "LAST SEQ"
                );
                for s in &status {
                    println!(
                        "{:<12} {:>10} {:>12} {:>10}",
                        s.name, s.messages, s.bytes, s.last_seq
                    );
                }
                println!();
                println!(
                    "{:<12} {:<18} {:>10} {:>10} {:>9} {:>12} {:>12}",
                    "STREAM",
                    "CONSUMER",
                    "DELIVERED",
                    "ACK FLOOR",
                    "PENDING",
                    "ACK PENDING",
                    "REDELIVERED"
                );
                for s in &status {
                    for c in &s.consumers {
                        println!(
                            "{:<12} {:<18} {:>10} {:>10} {:>9} {:>12} {:>12}",
                            s.name,
                            c.name,
                            c.delivered,
                            c.ack_floor,
                            c.pending,
                            c.ack_pending,
                            c.redelivered
                        );
                    }
                }
            }
        }
        Command::Replay {
            stream,
            user,
            since,
        } => {
            let db = db(&config).await?;
            let user = user_by(&db, &user).await?;
            let report = ctl::replay(&bus(&config).await?, &stream, user, since).await?;
            println!(
                "republished {} messages (up to stream sequence {})",
                report.republished, report.last_sequence
            );
        }
        Command::Reindex { user } => {
            let db = db(&config).await?;
            let user = match user {
                Some(u) => Some(user_by(&db, &u).await?),
                None => None,
            };
            let queued = ctl::reindex(&db, &bus(&config).await?, user).await?;
            println!("queued {queued} documents to be indexed again");
        }
        Command::Search {
            user,
            query,
            top_k,
            source,
            kind,
        } => {
            let db = db(&config).await?;
            let user = user_by(&db, &user).await?;
            let searcher = actions::search::Searcher::new(db, bus(&config).await?, &config);
            let found = searcher
                .search(
                    user,
                    actions::search::SearchRequest {
                        q: query,
                        top_k: Some(top_k),
                        sources: source,
                        kinds: kind,
                        ..Default::default()
                    },
                )
                .await?;
            println!("{} results ({})", found.hits.len(), found.mode);
            for hit in found.hits {
                println!(
                    "{:.4}  {:<8} {:<10} {}  {}",
                    hit.score, hit.source, hit.kind, hit.document_id, hit.title
                );
                println!("        {}", hit.snippet.replace('\n', " "));
            }
        }
        Command::Sync { user, resource } => {
            let db = db(&config).await?;
            let user = user_by(&db, &user).await?;
            let resource = common::events::Resource::parse(&resource)
                .ok_or_else(|| anyhow::anyhow!("resource: gmail, calendar, hubspot or slack"))?;
            let request_id = actions::sync::request(
                &db,
                &bus(&config).await?,
                user,
                resource,
                common::events::SyncScope::Changes,
                "manual",
            )
            .await?;
            println!(
                "sync of {} queued (request {request_id})",
                resource.as_str()
            );
        }
        Command::Dlq { command } => {
            let db = db(&config).await?;
            match command {
                DlqCommand::List { all, limit } => {
                    let letters = db::dead_letters::list(&db, all, limit).await?;
                    if letters.is_empty() {
                        println!("no dead letters");
                    }
                    for l in letters {
                        let first_line = l.error.lines().next().unwrap_or_default();
                        println!(
                            "{:>6}  {}  {:<16} {:<50} deliveries={} {}{}",
                            l.id,
                            l.created_at.format("%Y-%m-%d %H:%M:%S"),
                            l.consumer,
                            l.subject,
                            l.deliveries,
                            first_line,
                            if l.requeued_at.is_some() {
                                "  (requeued)"
                            } else {
                                ""
                            }
                        );
                    }
                }
                DlqCommand::Show { id } => {
                    let l = db::dead_letters::get(&db, id).await?;
                    println!("id:          {}", l.id);
                    println!("stream:      {} (seq {})", l.stream, l.stream_seq);
                    println!("consumer:    {}", l.consumer);
                    println!("subject:     {}", l.subject);
                    println!("deliveries:  {}", l.deliveries);
                    println!("created:     {}", l.created_at);
                    println!("requeued:    {:?}", l.requeued_at);
                    println!("headers:     {}", l.headers);
                    println!("error:\n{}", l.error);
                    println!("payload:\n{}", String::from_utf8_lossy(&l.payload));
                }
                DlqCommand::Requeue { id } => {
                    let seq = ctl::requeue(&db, &bus(&config).await?, id).await?;
                    println!("dead letter {id} requeued as stream sequence {seq}");
                }
            }
        }
        Command::Webhook {
            command: WebhookCommand::Create { email, source },
        } => {
            let source = Source::parse(&source).map_err(|r| anyhow::anyhow!("source: {r}"))?;
            let db = db(&config).await?;
            let user = db::users::ensure(&db, &email).await?;
            let mut key = [0u8; 24];
            rand::thread_rng().fill_bytes(&mut key);
            let secret = format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(key)
            );
            let ring = config.key_ring()?;
            let endpoint = db::webhooks::create(&db, &ring, user, &source, &secret).await?;
            println!(
                "POST {}/api/webhooks/generic/{}   (source {source})",
                config.public_url.trim_end_matches('/'),
                endpoint.id
            );
            println!("secret: {secret}");
        }
        Command::Keys {
            command: KeysCommand::Generate,
        } => unreachable!("handled before the configuration is loaded"),
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            let ring = config.key_ring()?;
            let db = db(&config).await?;
            let report = db::connections::rotate_keys(&db, &ring).await?;
            let endpoints = db::webhooks::rotate_keys(&db, &ring).await?;
            println!(
                "re-encrypted {} connections and {endpoints} webhook endpoint secrets under key {}",
                report.rotated,
                ring.current_id()
            );
            for (id, reason) in &report.failed {
                eprintln!("connection {id} left as it was: {reason}");
            }
            anyhow::ensure!(
                report.failed.is_empty(),
                "{} connections could not be re-encrypted",
                report.failed.len()
            );
        }
        Command::Insights {
            command:
                InsightsCommand::Themes {
                    user,
                    kind,
                    limit,
                    json,
                },
        } => {
            let db = db(&config).await?;
            let user = user_by(&db, &user).await?;
            let filter = db::insights::Filter {
                kind,
                ..Default::default()
            };
            let themes = db::insights::themes(&db, user, &filter, "mentions", 0, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&themes)?);
            } else {
                print!("{}", ctl::themes_table(&themes));
            }
        }
        Command::Insights {
            command:
                InsightsCommand::Reprocess {
                    user,
                    source,
                    since,
                    until,
                },
        } => {
            let db = db(&config).await?;
            let user = user_by(&db, &user).await?;
            let filter = db::documents::KeyFilter {
                source,
                since,
                until,
            };
            let queued = ctl::reprocess_insights(&db, &bus(&config).await?, user, &filter).await?;
            println!("queued {queued} documents to be read again by product intelligence");
        }
        Command::Insights {
            command: InsightsCommand::Regroup { user, threshold },
        } => {
            let db = db(&config).await?;
            let user = user_by(&db, &user).await?;
            let settings = db::insights::settings(&db, user).await?;
            let threshold = threshold.unwrap_or(settings.joining(joining(&config)).regroup);
            anyhow::ensure!(
                (0.0..=1.0).contains(&threshold),
                "--threshold must be between 0 and 1"
            );
            let r = db::insights::regroup(&db, user, threshold).await?;
            println!(
                "regrouped {} items: {} moved; {} themes before, {} after ({} started, {} removed)",
                r.items,
                r.moved,
                r.themes_before,
                r.themes_after,
                r.created.len(),
                r.removed
            );
        }
        Command::Insights {
            command:
                InsightsCommand::Preview {
                    user,
                    from,
                    to,
                    settings,
                    model,
                    apply,
                    json,
                    wait_secs,
                },
        } => {
            let db = db(&config).await?;
            let who = user.clone();
            let user = user_by(&db, &user).await?;
            let mut patch = ctl::setting_patch(&settings)?;
            if let Some(m) = model {
                patch.insert("model".into(), m.into());
            }
            let bus = bus(&config).await?;
            let p =
                ctl::request_preview(&db, &bus, &config, user, &who, (from, to), &patch).await?;
            let bar = indicatif::ProgressBar::new(p.messages.max(0) as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} reading {pos}/{len} messages {wide_bar} {eta}",
                )?,
            );
            let p = ctl::await_preview(
                &db,
                user,
                p.id,
                std::time::Duration::from_secs(wait_secs),
                |p| bar.set_position(p.read.max(0) as u64),
            )
            .await?;
            bar.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                print!("{}", ctl::preview_text(&p));
            }
            anyhow::ensure!(p.status == "ready", "the preview is {}", p.status);
            if apply {
                let a = db::previews::apply(&db, user, p.id).await?;
                println!(
                    "applied: {} items replaced by {}; {} themes started, {} removed",
                    a.removed, a.stored, a.themes_created, a.themes_removed
                );
            } else {
                println!(
                    "nothing live changed; apply with `ctl insights apply --user {who} --preview {}`",
                    p.id
                );
            }
        }
        Command::Insights {
            command: InsightsCommand::Apply { user, preview },
        } => {
            let db = db(&config).await?;
            let user = user_by(&db, &user).await?;
            let a = db::previews::apply(&db, user, preview).await?;
            println!(
                "applied: {} items replaced by {}; {} themes started, {} removed",
                a.removed, a.stored, a.themes_created, a.themes_removed
            );
        }
        Command::Rules {
            command: RulesCommand::List { user, json },
        } => {
            let db = db(&config).await?;
            let user = match user {
                Some(u) => Some(user_by(&db, &u).await?),
                None => None,
            };
            let rules = db::rules::all(&db, user).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rules)?);
            } else {
                print!("{}", ctl::rules_table(&rules));
            }
        }
        Command::Rules {
            command:
                RulesCommand::Backtest {
                    user,
                    rule,
                    from,
                    to,
                    limit,
                },
        } => {
            let db = db(&config).await?;
            let user = user_by(&db, &user).await?;
            let stored = db::rules::get(&db, user, rule)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no rule {rule} for this user"))?;
            let compiled = actions::rules::stored(&stored)
                .ok_or_else(|| anyhow::anyhow!("rule {rule} is a memory: it never fires"))?;
            let result = actions::rules::backtest(
                &db,
                &bus(&config).await?,
                user,
                &compiled,
                from,
                to,
                limit,
            )
            .await?;
            print!("{}", ctl::backtest_report(&result));
        }
        Command::Demo {
            command: DemoCommand::Load { email },
        } => {
            let db = db(&config).await?;
            let user = db::users::ensure(&db, &email).await?;
            let limits = limits(&config);
            let accepted = ctl::load_demo(&bus(&config).await?, user, &limits).await?;
            let rules = ctl::load_demo_rules(&db, user).await?;
            eprintln!(
                "demo user {email}: {} documents submitted, {rules} rules",
                accepted.len()
            );
            println!("{}", token(&config, user, &email, Some(365))?);
        }
        Command::Demo {
            command: DemoCommand::LoadProduct { email },
        } => {
            let db = db(&config).await?;
            let user = db::users::ensure(&db, &email).await?;
            let limits = limits(&config);
            let accepted = ctl::load_product_demo(&db, &bus(&config).await?, user, &limits).await?;
            eprintln!(
                "product demo user {email}: {} documents submitted, product intelligence on",
                accepted.len()
            );
            println!("{}", token(&config, user, &email, Some(365))?);
        }
    }
    Ok(())
}
