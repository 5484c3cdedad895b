"""Finding the official mbpp.jsonl on a user's machine: explicit paths, the environment, ../shared, the user
cache, a one-time checked download; and what the main job and `t2c evaluate` do when it cannot be had."""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading

import pytest

from megatron_t2c.evaluation.tasks import mbpp as M

OFFICIAL = M.SHARED_PATH  # this checkout's copy (the test machines have ../shared/data)


def _closed_port_url() -> str:
    """A URL on loopback where nothing listens: a machine without network, without waiting for a timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mbpp.jsonl"


@pytest.fixture
def user_machine(tmp_path, monkeypatch):
    """No ../shared folder, an empty user cache, no $T2C_MBPP, no network."""
    monkeypatch.setattr(M, "SHARED_PATH", tmp_path / "no-shared" / "mbpp.jsonl")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(M.ENV_PATH, raising=False)
    monkeypatch.setenv(M.ENV_URL, _closed_port_url())
    return tmp_path


class _Server:
    """A loopback HTTP server handing out ``body`` and counting requests."""

    def __init__(self, body: bytes):
        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mbpp.jsonl"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_search_order(user_machine, monkeypatch):
    cache = M.cache_path()
    cache.parent.mkdir(parents=True)
    cache.write_bytes(OFFICIAL.read_bytes())
    assert M.resolve_mbpp_path() == cache
    shared = user_machine / "no-shared" / "mbpp.jsonl"
    shared.parent.mkdir()
    shared.write_bytes(b"x")
    assert M.resolve_mbpp_path() == shared  # ../shared before the cache
    monkeypatch.setenv(M.ENV_PATH, str(OFFICIAL))
    assert M.resolve_mbpp_path() == OFFICIAL  # $T2C_MBPP before both
    assert M.resolve_mbpp_path(cache) == cache  # --mbpp-path first
    with pytest.raises(M.MbppUnavailable, match="--mbpp-path .*missing.jsonl is not a file"):
        M.resolve_mbpp_path(user_machine / "missing.jsonl")  # a named file is never swapped for another
    monkeypatch.setenv(M.ENV_PATH, str(user_machine / "gone.jsonl"))
    with pytest.raises(M.MbppUnavailable, match="T2C_MBPP"):
        M.resolve_mbpp_path()


def test_downloads_once_into_the_cache_and_checks_the_file(user_machine, monkeypatch):
    server = _Server(OFFICIAL.read_bytes())
    try:
        monkeypatch.setenv(M.ENV_URL, server.url)
        assert M.resolve_mbpp_path() == M.cache_path()
        assert len(M.load_mbpp()) == 500 and server.requests == 1
        assert M.resolve_mbpp_path() == M.cache_path() and server.requests == 1  # cached: no second download
    finally:
        server.close()
    M.cache_path().unlink()
    wrong = _Server(OFFICIAL.read_bytes().replace(b"Write a", b"Write  a", 1))
    try:
        monkeypatch.setenv(M.ENV_URL, wrong.url)
        with pytest.raises(M.MbppUnavailable, match="not the official|official mbpp.jsonl"):
            M.resolve_mbpp_path()
        assert not M.cache_path().exists()  # a wrong file is never kept
    finally:
        wrong.close()


def test_no_file_and_no_network(user_machine, capsys):
    """The main job skips MBPP and says why and how; `t2c evaluate ... --task mbpp` fails with one line."""
    from megatron_t2c.analysis.report import build_report
    from megatron_t2c.evaluation.commands import evaluate_main
    from megatron_t2c.pipeline.main_job import Pipeline, PipelineConfig

    with pytest.raises(M.MbppUnavailable) as info:
        M.resolve_mbpp_path()
    message = str(info.value)
    for way in ("--mbpp-path", "$T2C_MBPP", str(M.SHARED_PATH), str(M.cache_path()), "download"):
        assert way in message, way

    run_dir = user_machine / "run"
    console = io.StringIO()
    pipeline = Pipeline(PipelineConfig(run_dir=str(run_dir), cpu=True), out=console)
    assert pipeline.mbpp_path() is None
    said = console.getvalue()
    assert "MBPP skipped" in said and "--mbpp-path" in said and "HumanEval runs" in said
    skipped = json.loads((run_dir / "eval" / "mbpp_skipped.json").read_text())
    assert "download failed" in skipped["reason"] and "$T2C_MBPP" in skipped["how_to_provide"]
    build_report(str(run_dir), embeddings=False, contamination=False)
    assert "**MBPP was skipped**" in (run_dir / "report.md").read_text()

    samples = user_machine / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "MBPP/11", "completion": "    return 1\n"}) + "\n")
    code = evaluate_main(["execute", "--task", "mbpp", "--samples", str(samples), "--output",
                          str(user_machine / "r.jsonl"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: MBPP data not found") and "$T2C_MBPP" in err[0]


def test_a_found_file_is_passed_on(user_machine, monkeypatch):
    monkeypatch.setenv(M.ENV_PATH, str(OFFICIAL))
    from megatron_t2c.pipeline.main_job import Pipeline, PipelineConfig

    run_dir = user_machine / "run"
    pipeline = Pipeline(PipelineConfig(run_dir=str(run_dir), cpu=True), out=io.StringIO())
    assert pipeline.mbpp_path() == str(OFFICIAL)
    assert not (run_dir / "eval" / "mbpp_skipped.json").exists()
