"""The emulator fixture itself: TLS as *.googleapis.com, and the repairs its proxy makes."""

import http.client
import json
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from tests.fixtures import gcs as gcs_fixture
from tests.fixtures import gcs_proxy
from tests.fixtures.processes import REPO_ROOT as _REPO


def _tunnel(gcs, host: str = "www.googleapis.com") -> http.client.HTTPSConnection:
    """An HTTPS connection to `host` through the proxy, trusting only the throwaway CA."""
    proxy = urllib.parse.urlsplit(gcs.env["https_proxy"])
    context = ssl.create_default_context(cafile=gcs.env["CURL_CA_BUNDLE"])
    conn = http.client.HTTPSConnection(proxy.hostname, proxy.port, context=context, timeout=10)
    conn.set_tunnel(host, 443)
    return conn


def _request(gcs, method: str, path: str, **kwargs) -> tuple[int, dict, bytes]:
    conn = _tunnel(gcs, kwargs.pop("host", "www.googleapis.com"))
    conn.request(method, path, **kwargs)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_starts_in_well_under_a_second():
    start = time.monotonic()
    with gcs_fixture.running_emulator("startup-check") as gcs:
        assert gcs.list("gs://startup-check") == []
    assert time.monotonic() - start < 3  # typically ~0.5 s, on a busy 2-core machine


def test_storage_layout_is_answered_for_existing_buckets_only(gcs_emulator):
    status, _, body = _request(
        gcs_emulator, "GET", f"/storage/v1/b/{gcs_emulator.bucket}/storageLayout"
    )
    assert status == 200
    assert json.loads(body)["hierarchicalNamespace"] == {"enabled": False}
    status, _, _ = _request(gcs_emulator, "GET", "/storage/v1/b/no-such-bucket/storageLayout")
    assert status == 404


def test_resumable_upload_location_stays_inside_the_tunnel(gcs_emulator):
    path = f"/upload/storage/v1/b/{gcs_emulator.bucket}/o?uploadType=resumable&name=emulator/r.bin"
    status, headers, _ = _request(gcs_emulator, "POST", path, body=b"")
    assert status == 200
    location = urllib.parse.urlsplit(headers["Location"])
    assert (location.scheme, location.netloc) == ("https", "www.googleapis.com")
    status, _, _ = _request(gcs_emulator, "PUT", f"{location.path}?{location.query}", body=b"abc")
    assert status == 200
    assert gcs_emulator.read(f"gs://{gcs_emulator.bucket}/emulator/r.bin") == b"abc"


def test_chunked_upload_is_stored_without_chunk_framing(gcs_emulator):
    path = f"/upload/storage/v1/b/{gcs_emulator.bucket}/o?uploadType=media&name=emulator/c.txt"
    chunks = iter([b"hello ", b"chunked ", b"world"])
    status, _, _ = _request(gcs_emulator, "POST", path, body=chunks, encode_chunked=True)
    assert status == 200
    assert gcs_emulator.read(f"gs://{gcs_emulator.bucket}/emulator/c.txt") == b"hello chunked world"


def test_reads_through_the_xml_host(gcs_emulator):
    gcs_emulator.upload(f"gs://{gcs_emulator.bucket}/emulator/x.txt", b"0123456789")
    path = f"/{gcs_emulator.bucket}/emulator/x.txt"
    status, _, body = _request(
        gcs_emulator, "GET", path, host="storage.googleapis.com", headers={"Range": "bytes=2-4"}
    )
    assert (status, body) == (206, b"234")


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("www.googleapis.com", "/storage/v1/b/forbidden-x/o?prefix=a"),
        ("www.googleapis.com", "/upload/storage/v1/b/forbidden-x/o?uploadType=media&name=a"),
        ("storage.googleapis.com", "/forbidden-x/a/b.txt"),
    ],
)
def test_forbidden_buckets_answer_403(gcs_emulator, host, path):
    status, _, body = _request(gcs_emulator, "GET", path, host=host)
    assert status == 403
    assert json.loads(body)["error"]["errors"][0]["reason"] == "forbidden"
    assert gcs_proxy.bucket_of(host, path) == "forbidden-x"


def test_other_hosts_are_refused(gcs_emulator):
    conn = _tunnel(gcs_emulator, "example.com")
    with pytest.raises(OSError, match="403"):
        conn.request("GET", "/")


def test_standalone_prints_the_environment_and_stops_on_sigterm():
    """`python -m tests.fixtures.gcs`, as a developer runs it by hand."""
    command = [sys.executable, "-m", "tests.fixtures.gcs", "--bucket", "by-hand"]
    with subprocess.Popen(command, cwd=_REPO, stdout=subprocess.PIPE, text=True) as process:
        lines = []
        while not (line := process.stdout.readline()).startswith("# bucket"):
            assert line, "exited before it was ready"
            lines.append(line)
        env = dict(line.removeprefix("export ").strip().split("=", 1) for line in lines)
        assert "gs://by-hand" in line
        endpoint = env["STORAGE_EMULATOR_HOST"]
        with urllib.request.urlopen(f"{endpoint}/storage/v1/b/by-hand", timeout=5) as response:
            assert json.load(response)["name"] == "by-hand"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    with pytest.raises(OSError):  # the proxy went with it
        urllib.request.urlopen(f"{endpoint}/storage/v1/b/by-hand", timeout=5)
