"""`make bench-web`'s measuring parts (tests/bench/bench_web.py): the clients read over keep-alive
connections in their own processes and refuse an error answer, and the server's CPU is summed over
its whole process tree."""

from __future__ import annotations

import http.server
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.bench import bench_web


class Pages(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn's gthread workers answer
    connections: set[int] = set()

    def do_GET(self) -> None:
        Pages.connections.add(id(self.connection))
        status = 500 if self.path == "/broken" else 200
        body = b"page"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Page-Cache", "hit")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None  # no access log in the test's output


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Pages.connections.clear()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_clients_in_their_own_processes_read_every_page_over_one_connection_each(server):
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        latencies, outcomes, cpu = bench_web.measure(pool, server, ["/a", "/b"], 3, 30)
    assert len(latencies) == 30 and all(ms > 0 for ms in latencies)
    assert outcomes == {"hit": 30} and cpu > 0
    assert len(Pages.connections) == 3


def test_an_error_answer_stops_the_measurement_naming_the_page(server):
    with (
        multiprocessing.get_context("spawn").Pool(1) as pool,
        pytest.raises(AssertionError, match="/broken answered 500"),
    ):
        bench_web.measure(pool, server, ["/broken"], 1, 2)


def test_the_server_cpu_counts_its_children():
    busy = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'while True: pass'], timeout=60)"
    parent = subprocess.Popen([sys.executable, "-c", busy], start_new_session=True)
    try:
        time.sleep(1.0)
        assert bench_web.process_tree_cpu(parent.pid) > 0.3  # the parent waits; its child burns CPU
    finally:
        os.killpg(parent.pid, signal.SIGKILL)  # the child too
        parent.wait()
