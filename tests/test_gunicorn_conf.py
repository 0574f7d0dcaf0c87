"""The web role's gunicorn settings: enough connections and open files for 10,000 streams."""
import resource
import subprocess
import sys

from webapp import gunicorn_conf


def test_one_web_process_takes_ten_thousand_streams_by_default():
    assert gunicorn_conf.worker_connections >= 10_000


def test_the_open_files_limit_is_raised_towards_the_connections_but_never_past_the_hard_one():
    # in a child process: the limit is the whole process's
    script = """
import resource
from webapp.gunicorn_conf import raise_open_files_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
print(raise_open_files_limit(4096), resource.getrlimit(resource.RLIMIT_NOFILE)[0], wanted)
beyond = raise_open_files_limit(10 ** 9)
print(beyond, hard)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    raised, now, wanted = map(int, out[0].split())
    assert raised == now == wanted and wanted > 256
    beyond, hard = map(int, out[1].split())
    if hard != resource.RLIM_INFINITY:
        assert beyond == hard
