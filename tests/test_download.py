"""The downloader against a local HTTP server: progress, resume, atomic rename, corrupt files, no network."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from messages import raises_naming
from npz_helpers import Arch, write_google_npz

from vitlab.download import main
from vitlab.weights.fetch import download, known_checkpoint, url_for

ARCH = Arch(patch=8, width=32, depth=2, heads=2, mlp=64, img_size=32, num_classes=10)
REMOTE = "/imagenet21k/ViT-B_16.npz"


class Server:
    """A file server on 127.0.0.1 that honours Range requests and can drop one transfer midway."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[dict] = []  # path and Range header of every request
        self.drop_after: int | None = None  # send this many bytes of the next response, then hang up
        self.trickle: float | None = None  # send one byte every so many seconds
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append({"path": self.path, "range": self.headers.get("Range")})
                if self.path not in server.files:
                    self.send_error(404)
                    return
                data, start = server.files[self.path], 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_after is not None:
                    body, server.drop_after = body[: server.drop_after], None
                    self.close_connection = True
                if server.trickle is not None:
                    for i in range(min(len(body), 40)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(server.trickle)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def checkpoint_bytes(tmp_path_factory):
    path = write_google_npz(tmp_path_factory.mktemp("source") / "source.npz", ARCH)
    return path.read_bytes()


@pytest.fixture
def server(monkeypatch, checkpoint_bytes):
    server = Server({REMOTE: checkpoint_bytes, "/imagenet21k/ViT-L_16.npz": b"PK\x03\x04 this is not a zip" * 100})
    monkeypatch.setenv("VITLAB_PRETRAINED_URL", server.url)
    yield server
    server.close()


def closed_port() -> int:
    """A local port with nothing listening: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_with_progress(tmp_path, server, checkpoint_bytes, capsys):
    path = download("ViT-B_16", dest=tmp_path / "Pretrained")
    assert path == tmp_path / "Pretrained" / "imagenet21k_ViT-B_16.npz"
    assert path.read_bytes() == checkpoint_bytes
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no .part left behind
    progress = capsys.readouterr().err
    assert "imagenet21k_ViT-B_16.npz" in progress and "100%" in progress
    assert server.requests == [{"path": REMOTE, "range": None}]
    assert download("ViT-B_16", dest=tmp_path / "Pretrained") == path  # already there: no second request
    assert len(server.requests) == 1


def test_resume_after_interrupted_transfer(tmp_path, server, checkpoint_bytes):
    server.drop_after = 3000
    final = tmp_path / "imagenet21k_ViT-B_16.npz"
    part = tmp_path / "imagenet21k_ViT-B_16.npz.part"
    with pytest.raises(ConnectionError) as error:
        download("ViT-B_16", dest=tmp_path, progress=False)
    assert "interrupted" in str(error.value) and str(part) in str(error.value)
    assert not final.exists()  # the final name appears only for a complete file
    assert part.read_bytes() == checkpoint_bytes[:3000]

    path = download("ViT-B_16", dest=tmp_path, progress=False)
    assert server.requests[-1] == {"path": REMOTE, "range": "bytes=3000-"}
    assert path.read_bytes() == checkpoint_bytes
    assert not part.exists()


def test_complete_part_file_is_finished_without_refetching(tmp_path, server, checkpoint_bytes):
    (tmp_path / "imagenet21k_ViT-B_16.npz.part").write_bytes(checkpoint_bytes)
    path = download("ViT-B_16", dest=tmp_path, progress=False)  # the server answers 416 to the range
    assert path.read_bytes() == checkpoint_bytes


def test_corrupt_download_is_deleted(tmp_path, server):
    with pytest.raises(ValueError, match="not a valid ViT checkpoint") as error:
        download("ViT-L_16", dest=tmp_path, progress=False)
    assert str(tmp_path / "imagenet21k_ViT-L_16.npz") in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_no_network_fails_fast_with_url_and_path(tmp_path, monkeypatch, capsys):
    port = closed_port()
    monkeypatch.setenv("VITLAB_PRETRAINED_URL", f"http://127.0.0.1:{port}")
    start = time.perf_counter()
    with pytest.raises(ConnectionError) as error:
        download("ViT-B_16", variant="imagenet21k+imagenet2012", dest=tmp_path)
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert f"http://127.0.0.1:{port}/imagenet21k+imagenet2012/ViT-B_16.npz" in message
    assert str(tmp_path / "imagenet21k+imagenet2012_ViT-B_16.npz") in message
    assert main(["ViT-B_16", "--dest", str(tmp_path)]) == 1  # the CLI prints it, no traceback
    assert "place it at" in capsys.readouterr().err


def test_names_urls_and_list(capsys, monkeypatch):
    monkeypatch.delenv("VITLAB_PRETRAINED_URL", raising=False)
    assert url_for("ViT-B_16") == "https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz"
    assert (
        url_for("ViT-B_16", "augreg") == "https://storage.googleapis.com/vit_models/augreg/"
        "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz"
    )
    assert known_checkpoint("imagenet21k+imagenet2012_ViT-L_16-224.npz") == ("ViT-L_16-224", "imagenet21k+imagenet2012")
    assert known_checkpoint("mine.npz") is None
    with pytest.raises(ValueError, match="ViT-B_16, ViT-B_32"):
        url_for("ViT-X_99")
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert "imagenet21k_ViT-H_14.npz" in listed and "augreg_ViT-Ti_16.npz" in listed


def test_cli_downloads(tmp_path, server, checkpoint_bytes, capsys):
    assert main(["ViT-B_16", "--dest", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "imagenet21k_ViT-B_16.npz")
    assert (tmp_path / "imagenet21k_ViT-B_16.npz").read_bytes() == checkpoint_bytes


def test_a_trickling_server_is_stopped_as_stalled(server, tmp_path, monkeypatch):
    monkeypatch.setattr("vitlab.weights.fetch.STALL_SECONDS", 0.5)
    server.trickle = 0.05  # 20 bytes/s: each read is well within the socket timeout, the file never ends
    with raises_naming(ConnectionError, "stalled", "0.5 s", "kept"):
        download("ViT-B_16", dest=tmp_path, progress=False)


def test_a_missing_file_on_the_server_is_not_a_connection_problem(server, tmp_path):
    with pytest.raises(ConnectionError) as failed:
        download("ViT-B_32", dest=tmp_path, progress=False)
    assert "HTTP 404" in str(failed.value) and "The server has no file at that address" in str(failed.value)
    assert "Check the connection" not in str(failed.value)


def test_a_download_into_a_full_disk_says_the_local_disk_is_full(server, tmp_path, small_disk, capsys):
    """A real 64 KiB filesystem for a 110 kB file: the write fails, not the connection."""
    disk = small_disk(64)
    part = disk / "imagenet21k_ViT-B_16.npz.part"
    code = main(["ViT-B_16", "--dest", str(disk)])
    assert code == 1
    err = capsys.readouterr().err  # the progress bar, then the error
    line = err.splitlines()[-1]
    assert err.count("error:") == 1 and "Traceback" not in err
    assert line.startswith(
        f"error: the local disk is full (No space left on device): could not write the download {part}"
    )
    kept = part.stat().st_size
    assert 0 < kept <= 64 * 1024
    assert line.endswith(
        f"the {kept:,} bytes received are kept there: free some space on that disk and run the same command to "
        "resume, or download into another folder (--dest)"
    )
    assert "interrupted" not in line and "connection" not in line.lower()


def test_a_write_error_is_not_taken_for_a_connection_error(server, tmp_path, monkeypatch, checkpoint_bytes):
    """The same on any machine: the file's writes fail with ENOSPC after 4096 bytes; then space is freed."""
    import errno

    import vitlab.weights.fetch as module

    class FullFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            if self.f.tell() + len(data) > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    with monkeypatch.context() as patch, raises_naming(OSError, "disk is full", "resume") as full:
        patch.setattr(module, "open", lambda *args: FullFile(open(*args)), raising=False)
        download("ViT-B_16", dest=tmp_path, progress=False)
    assert not isinstance(full.value, ConnectionError)
    path = download("ViT-B_16", dest=tmp_path, progress=False)  # resumes from what was kept
    assert path.read_bytes() == checkpoint_bytes
