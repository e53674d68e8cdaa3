"""The intake peer for `make bench`: the stack this product replaces, FastAPI + Celery.

`POST /api/ingest/documents` as such a service writes it: pydantic validates the body, the
bearer JWT is verified (HS256, the same secret and tokens as the gateway's), each document is
queued as a Celery task on Redis (`.delay()`, answered once the broker has it), 202. Run with
uvicorn, one worker process per core. Installed for the benchmark only.
"""
import os
from typing import Any, Optional

import jwt
from celery import Celery
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

SECRET = os.environ["PEER_SECRET_KEY"]
celery = Celery("seed", broker=os.environ.get("PEER_BROKER", "redis://127.0.0.1:6379/15"))
app = FastAPI()


class Document(BaseModel):
    source: str
    kind: str
    external_id: str
    title: str = ""
    body: str
    metadata: dict[str, Any] = {}
    occurred_at: Optional[str] = None


class IngestRequest(BaseModel):
    documents: list[Document]
    bulk: bool = False


@celery.task(name="ingest_document")
def ingest_document(user: str, document: dict) -> None:  # run by a worker, later
    pass


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/api/ingest/documents", status_code=202)
def ingest(request: IngestRequest, authorization: str = Header(...)) -> dict:
    token = authorization.removeprefix("Bearer ").strip()
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False})
    except jwt.PyJWTError:
        raise HTTPException(status_code=401, detail="invalid token")
    ids = [ingest_document.delay(claims["sub"], d.model_dump()).id for d in request.documents]
    return {"accepted": len(ids), "ids": ids}
