"""A local GCS server for tests and benchmarks: `gcp-storage-emulator` made to send the generation
headers real GCS sends, with the clients pointed at it through their environment.

gcp-storage-emulator (PyPI; the only GCS server installable here: fake-gcs-server and Google's
storage-testbench are not on the registries) answers media downloads without `x-goog-generation` /
`x-goog-metageneration`.  Real GCS always sends them
(https://cloud.google.com/storage/docs/xml-api/reference-headers#xgooggeneration) and tensorstore
builds the condition of its next conditional write from them: without them an OCDBT checkpoint
write that reads its manifest first fails with "Malformed StorageGeneration" (about 1 save in 5).
`start()` adds the two headers to the emulator's download handler (and stops it printing a
traceback each time a client hangs up early); the server is the emulator's own.  Conditional writes (`ifGenerationMatch`) are still not enforced by it, so tests
on it cannot show two racing writers being refused (docs/storage.md).

  start(bucket) -> (server, url)     the patched server in this process (a thread); server.stop()
  client_env(url, project) -> dict   the variables that point gcsfs, tensorstore and epath at url
  python -m t2t_jax.local_gcs --port N --bucket B   the same server in its own process
"""

from __future__ import annotations

import argparse
import functools
import socket
import sys
import time


def client_env(url: str, project: str = "t2t-test") -> dict[str, str]:
  """Environment that points gcsfs (STORAGE_EMULATOR_HOST), tensorstore (TENSORSTORE_GCS_HTTP_URL)
  and etils.epath (EPATH_USE_TF=false: fsspec, not tf.io.gfile) at the server at `url`."""
  return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
          "GOOGLE_CLOUD_PROJECT": project, "EPATH_USE_TF": "false"}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _with_generation_headers(download):
  """The emulator's download handler, plus the x-goog-generation headers of the object served."""

  @functools.wraps(download)
  def handler(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    if response.status.value in (200, 206):
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
  handler.t2t_patched = True
  return handler


def _patch_emulator() -> None:
  """Once per process: every route to the emulator's download handler gets the headers."""
  from gcp_storage_emulator import server as server_lib  # pylint: disable=import-outside-toplevel
  from gcp_storage_emulator.handlers import objects  # pylint: disable=import-outside-toplevel
  if getattr(objects.download, "t2t_patched", False):
    return
  original = objects.download
  patched = _with_generation_headers(original)
  objects.download = patched  # objects.get(alt=media) calls it by its module name
  for _, methods in server_lib.HANDLERS:
    for method, fn in list(methods.items()):
      if fn is original:
        methods[method] = patched


def start(bucket: str = "t2t-test", port: int | None = None, host: str = "127.0.0.1"):
  """Starts the patched server in memory in this process; returns (server, url)."""
  from gcp_storage_emulator import server as server_lib  # pylint: disable=import-outside-toplevel
  _patch_emulator()
  port = port or free_port()
  server = server_lib.create_server(host, port, in_memory=True, default_bucket=bucket)
  server.start()
  httpd = server._api._httpd  # pylint: disable=protected-access
  report = httpd.handle_error

  def handle_error(request, client_address):
    """A client that hangs up mid-answer (a ranged read's prefetch) is not a server error."""
    if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
      report(request, client_address)

  httpd.handle_error = handle_error
  return server, f"http://{host}:{port}"


def wait_until_up(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
  deadline = time.time() + timeout
  while True:
    try:
      with socket.create_connection((host, port), timeout=0.2):
        return
    except OSError:
      if time.time() > deadline:
        raise
      time.sleep(0.1)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--bucket", default="t2t-test")
  args = parser.parse_args(argv)
  server, _ = start(args.bucket, args.port)
  try:
    while True:
      time.sleep(1)
  except KeyboardInterrupt:
    return 0
  finally:
    server.stop()


if __name__ == "__main__":
  raise SystemExit(main())
