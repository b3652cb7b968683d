"""A local Cloud Storage emulator (gcp-storage-emulator) for gs:// tests, in a thread of this process.

    with gcs_emulator.running(bucket="runs") as env:   # env: the variables clients need
      ...  # gs://runs/... now reaches the emulator, here and in subprocesses given `env`

Clients reach it by environment: google-cloud-storage and gcsfs (epath's gs:// backend, see
seedcoder_jax/storage.py) by STORAGE_EMULATOR_HOST, tensorstore's gcs driver (orbax's array bytes)
by TENSORSTORE_GCS_HTTP_URL. GOOGLE_CLOUD_PROJECT spares the clients a project look-up, and
GCE_METADATA_HOST / GCE_METADATA_ROOT point the credential probes at a closed port (no waiting
on a metadata server); with no credentials found, all clients go anonymous.

One gap of the emulator is filled here: its media downloads lack the `x-goog-generation` header
that Cloud Storage sends, so tensorstore read every object's generation as 0 and refused its own
conditional write of the OCDBT manifest ("Malformed StorageGeneration") on orbax's second array.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _send_generation_headers() -> None:
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top
  original = objects.download
  if getattr(original, "sends_generation", False):
    return

  def download(request, response, storage, *args, **kwargs):
    original(request, response, storage, *args, **kwargs)
    if response.status.value < 300:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = obj["generation"]
      response["x-goog-metageneration"] = obj["metageneration"]

  download.sends_generation = True
  objects.download = download  # objects.get (alt=media) looks it up at call time
  server.HANDLERS = tuple((regex, {m: download if h is original else h for m, h in hs.items()})
                          for regex, hs in server.HANDLERS)


@contextlib.contextmanager
def running(bucket: str = "runs"):
  from gcp_storage_emulator.server import create_server  # pylint: disable=g-import-not-at-top
  logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # 404s are expected
  _send_generation_headers()
  port = _free_port()
  server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
  server.start()
  url = f"http://127.0.0.1:{port}"
  closed = f"127.0.0.1:{_free_port()}"
  env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
         "GOOGLE_CLOUD_PROJECT": "emulated", "GCE_METADATA_HOST": closed,
         "GCE_METADATA_ROOT": closed, "EPATH_USE_TF": "false"}
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    yield env
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    server.stop()
