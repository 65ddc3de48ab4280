"""Atomic writers: all-or-nothing, normal permissions, output guard, temp cleanup on signals."""

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from t2t_jax import io_utils
from t2t_jax.errors import UserInputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
  target = tmp_path / "out.json"
  with pytest.raises(RuntimeError):
    with io_utils.atomic_write(target) as f:
      f.write("partial")
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == []


def test_atomic_write_replaces_and_uses_umask_permissions(tmp_path):
  target = tmp_path / "out.txt"
  target.write_text("old")
  with io_utils.atomic_write(target) as f:
    f.write("new")
  assert target.read_text() == "new"
  assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~_mask()
  assert os.listdir(tmp_path) == ["out.txt"]
  (tmp_path / "adir").mkdir()
  with pytest.raises(UserInputError, match="adir is a directory, expected a file"):
    with io_utils.atomic_write(tmp_path / "adir"):
      pass


def test_atomic_dir_all_or_nothing(tmp_path):
  target = tmp_path / "d"
  with pytest.raises(ValueError):
    with io_utils.atomic_dir(target, kind="thing") as tmp:
      open(os.path.join(tmp, "a"), "w").close()
      raise ValueError("bad input found midway")
  assert not target.exists() and os.listdir(tmp_path) == []
  with io_utils.atomic_dir(target, kind="thing") as tmp:
    open(os.path.join(tmp, "a"), "w").close()
  with io_utils.atomic_dir(target, kind="thing") as tmp:  # Same kind: replaces the old dir whole.
    open(os.path.join(tmp, "b"), "w").close()
  assert sorted(os.listdir(target)) == [io_utils.MARKER_FILE, "b"]
  assert sorted(os.listdir(tmp_path)) == ["d"]
  assert stat.S_IMODE(os.stat(target).st_mode) == 0o777 & ~_mask()
  marker = json.loads((target / io_utils.MARKER_FILE).read_text())
  assert marker["kind"] == "thing" and marker["tool"].startswith("t2t_jax ") and marker["created"]


def test_replacing_a_symbolic_link_leaves_no_parked_temp(tmp_path):
  """Issue 23: `t2t export --out LINK --overwrite` replaced the link but left it parked beside the
  output as `.LINK.t2t-old.<pid>.tmp` (rmtree refuses links).  The link goes; its target stays."""
  real = tmp_path / "real"
  with io_utils.atomic_dir(real, kind="k") as tmp:
    open(os.path.join(tmp, "v1"), "w").close()
  link = tmp_path / "link"
  link.symlink_to(real)
  with io_utils.atomic_dir(link, kind="k", overwrite=True) as tmp:
    open(os.path.join(tmp, "v2"), "w").close()
  assert sorted(os.listdir(tmp_path)) == ["link", "real"]
  assert not link.is_symlink() and sorted(os.listdir(link)) == [io_utils.MARKER_FILE, "v2"]
  assert sorted(os.listdir(real)) == [io_utils.MARKER_FILE, "v1"]


def test_failed_swap_puts_the_old_dir_back(tmp_path, monkeypatch):
  target = tmp_path / "d"
  with io_utils.atomic_dir(target, kind="thing") as tmp:
    open(os.path.join(tmp, "old"), "w").close()
  real_replace, calls = os.replace, []

  def flaky_replace(src, dst):
    calls.append((src, dst))
    if len(calls) == 2:  # the rename of the new dir onto the target
      raise KeyboardInterrupt
    return real_replace(src, dst)

  monkeypatch.setattr(os, "replace", flaky_replace)
  with pytest.raises(KeyboardInterrupt):
    with io_utils.atomic_dir(target, kind="thing") as tmp:
      open(os.path.join(tmp, "new"), "w").close()
  monkeypatch.undo()
  assert sorted(os.listdir(target)) == [io_utils.MARKER_FILE, "old"]
  assert sorted(os.listdir(tmp_path)) == ["d"]


# ---- the output guard ----------------------------------------------------------------------------


def _nonempty(path, name="keep.txt"):
  path.mkdir(parents=True, exist_ok=True)
  (path / name).write_text("user data")
  return path


def test_guard_refuses_replacing_what_it_should_not(tmp_path, monkeypatch):
  afile = tmp_path / "afile"
  afile.write_text("data")
  os.symlink(afile, tmp_path / "link_to_file")
  os.symlink(tmp_path / "gone", tmp_path / "dangling")
  user = _nonempty(tmp_path / "user")
  other = tmp_path / "other"
  with io_utils.atomic_dir(other, kind="dataset") as tmp:
    open(os.path.join(tmp, "catalog.jsonl"), "w").close()
  inputs_dir = _nonempty(tmp_path / "in")
  cases = [
      (afile, {}, r"exists and is not a folder \(a file\)"),
      (tmp_path / "link_to_file", {}, r"exists and is not a folder \(a file\)"),
      (tmp_path / "dangling", {}, r"exists and is not a folder \(a broken symlink\)"),
      (user, {}, r"is not empty and not a t2t output \(no .t2t_output.json\)"),
      (other, {}, "holds a t2t_jax 'dataset' output, not 'export'"),
      (inputs_dir, {"inputs": [inputs_dir / "keep.txt"], "overwrite": True}, r"overlaps the input .* \(it contains it\)"),
      (inputs_dir, {"inputs": [str(inputs_dir)], "overwrite": True}, r"overlaps the input .* \(it is it\)"),
      (inputs_dir / "sub", {"inputs": [inputs_dir]}, r"overlaps the input .* \(it lies inside it\)"),
      (afile / "sub", {}, "afile is not a directory"),
  ]
  for path, kw, message in cases:
    with pytest.raises(UserInputError, match=message):
      with io_utils.atomic_dir(path, kind="export", **kw):
        pytest.fail(f"{path} was not refused")
  # Symlinked inputs are resolved: an output reached through a link is still the input.
  os.symlink(inputs_dir, tmp_path / "in_link")
  with pytest.raises(UserInputError, match=r"\(it is it\)"):
    io_utils.check_output_dir(tmp_path / "in_link", kind="export", inputs=[inputs_dir], overwrite=True)
  # Nothing was touched or created.
  assert afile.read_text() == "data" and (user / "keep.txt").read_text() == "user data"
  assert sorted(os.listdir(tmp_path)) == ["afile", "dangling", "in", "in_link", "link_to_file", "other", "user"]
  # --overwrite replaces a dir of another kind or without a marker; an empty dir needs nothing.
  with io_utils.atomic_dir(user, kind="export", overwrite=True) as tmp:
    open(os.path.join(tmp, "x"), "w").close()
  assert sorted(os.listdir(user)) == [io_utils.MARKER_FILE, "x"]
  (tmp_path / "empty").mkdir()
  with io_utils.atomic_dir(tmp_path / "empty", kind="export"):
    pass


def test_guard_never_replaces_cwd_its_ancestors_home_or_root(tmp_path, monkeypatch):
  work = tmp_path / "a" / "b"
  work.mkdir(parents=True)
  monkeypatch.chdir(work)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  (tmp_path / "home").mkdir()
  for path, message in [(".", "is the current working directory"), (work, "is the current working directory"),
                        (tmp_path / "a", "contains the current working directory"),
                        ("/", "is the filesystem root"), (tmp_path / "home", "is the home directory")]:
    with pytest.raises(UserInputError, match=message):
      io_utils.check_output_dir(path, kind="export", overwrite=True)
  assert work.is_dir()


def test_guard_refuses_read_only_dirs(tmp_path):
  ro = _nonempty(tmp_path / "ro")
  with io_utils.atomic_dir(tmp_path / "ro2", kind="k"):
    pass
  for d in (ro, tmp_path / "ro2"):
    os.chmod(d, 0o555)
  try:
    for d in (ro, tmp_path / "ro2"):
      with pytest.raises(UserInputError, match="is read-only"):
        io_utils.check_output_dir(d, kind="k", overwrite=True)
  finally:
    for d in (ro, tmp_path / "ro2"):
      os.chmod(d, 0o755)


# ---- temporaries: stale ones swept, live ones removed on SIGTERM/SIGINT ------------------------


def _dead_pid() -> int:
  p = subprocess.Popen([sys.executable, "-c", "pass"])
  p.wait()
  return p.pid


def test_stale_temps_of_dead_processes_are_swept(tmp_path, caplog):
  host = io_utils._host()  # pylint: disable=protected-access
  dead = _dead_pid()
  stale_dir = tmp_path / f".d.t2t-tmp.{host}_{dead}.abc123.tmp"
  _nonempty(stale_dir, "half.bin")
  stale_file = tmp_path / f".d.t2t-tmp.{host}_{dead}.zz9.tmp"
  stale_file.write_text("x")
  live = tmp_path / f".d.t2t-tmp.{host}_{os.getppid()}.live00.tmp"  # our parent is alive
  live.mkdir()
  other_host = tmp_path / f".d.t2t-tmp.otherhost_{dead}.abc.tmp"  # maybe alive on its own host
  other_host.mkdir()
  other_target = tmp_path / f".e.t2t-tmp.{host}_{dead}.abc.tmp"  # beside another target
  other_target.mkdir()
  user_file = tmp_path / ".d.backup.tmp"  # not our naming
  user_file.write_text("mine")
  with caplog.at_level(logging.WARNING, logger="t2t_jax.io_utils"):
    with io_utils.atomic_dir(tmp_path / "d", kind="k"):
      pass
  assert sorted(os.listdir(tmp_path)) == sorted(["d", live.name, other_host.name, other_target.name, user_file.name])
  assert sum("removed stale temporary" in r.message for r in caplog.records) == 2
  # A killed swap (old parked, new never renamed in): the old dir is put back, not deleted.
  parked = tmp_path / f".e.t2t-old.{host}_{dead}.beef.tmp"
  _nonempty(parked, "previous.txt")
  with caplog.at_level(logging.WARNING, logger="t2t_jax.io_utils"):
    assert sorted(io_utils.sweep_stale_temps(tmp_path / "e")) == sorted([other_target.name, parked.name])
  assert (tmp_path / "e" / "previous.txt").read_text() == "user data"
  assert any("restored" in r.message for r in caplog.records)


def test_handler_is_installed_only_while_writing_and_never_over_someone_elses(tmp_path):
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
  with io_utils.atomic_dir(tmp_path / "d", kind="k"):
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    with io_utils.atomic_write(tmp_path / "f"):
      pass
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
  mine = lambda *_: None
  old = signal.signal(signal.SIGTERM, mine)
  try:
    with io_utils.atomic_dir(tmp_path / "d", kind="k"):
      assert signal.getsignal(signal.SIGTERM) is mine
  finally:
    signal.signal(signal.SIGTERM, old)


WRITER = textwrap.dedent("""
    import os, signal, sys, time
    # The writer's own dispositions, whatever the test run inherited (nohup or a background job
    # start it with SIGINT ignored, which Python then leaves ignored): the defaults of a shell command.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.path.insert(0, {repo!r})
    from t2t_jax import io_utils
    target, how = sys.argv[1], sys.argv[2]
    if how == "dir":
      ctx = io_utils.atomic_dir(target, kind="k")
    else:
      ctx = io_utils.atomic_write(target)
    with ctx as tmp:
      if how == "dir":
        with open(os.path.join(tmp, "big.bin"), "wb") as f:
          f.write(b"x" * 1000)
      else:
        tmp.write("partial")
        tmp.flush()
      print("WRITING", flush=True)
      time.sleep(120)
    print("DONE", flush=True)
""")


def _start_writer(tmp_path, target, how):
  script = tmp_path / "writer.py"
  script.write_text(WRITER.format(repo=REPO))
  proc = subprocess.Popen([sys.executable, str(script), str(target), how], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.stdout.readline().strip() == "WRITING", proc.stderr.read()
  return proc


def _temps(d):
  return [n for n in os.listdir(d) if ".t2t-" in n]


@pytest.mark.parametrize("how", ["dir", "file"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_write_removes_the_temp_and_keeps_the_old_output(tmp_path, how, sig):
  out = tmp_path / "out"
  out.mkdir()
  target = out / "t"
  if how == "dir":
    with io_utils.atomic_dir(target, kind="k") as tmp:
      open(os.path.join(tmp, "v1"), "w").close()
  else:
    target.write_text("v1")
  proc = _start_writer(tmp_path, target, how)
  assert len(_temps(out)) == 1
  proc.send_signal(sig)
  proc.wait(timeout=60)
  # The process still dies of the signal (SIGINT: by way of KeyboardInterrupt, which Python turns
  # back into the signal), so shells and schedulers see the usual status.
  assert proc.returncode == -sig, proc.stderr.read()
  assert _temps(out) == [] and os.listdir(out) == ["t"]
  if how == "dir":
    assert sorted(os.listdir(target)) == [io_utils.MARKER_FILE, "v1"]
  else:
    assert target.read_text() == "v1"


def test_sigkill_leaves_a_temp_that_the_next_run_sweeps(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  proc = _start_writer(tmp_path, out / "t", "dir")
  proc.kill()
  proc.wait(timeout=60)
  left = _temps(out)
  assert len(left) == 1 and left[0].startswith(f".t.t2t-tmp.{io_utils._host()}_{proc.pid}.")  # pylint: disable=protected-access
  # The next run beside the same target (another process) removes it, with a warning on stderr.
  code = ("import sys; sys.path.insert(0, %r)\nfrom t2t_jax import io_utils\n"
          "with io_utils.atomic_dir(%r, kind='k') as tmp: open(tmp + '/v2', 'w').close()\n") % (REPO, str(out / "t"))
  res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
  assert res.returncode == 0, res.stderr
  assert "removed stale temporary" in res.stderr and left[0] in res.stderr
  assert os.listdir(out) == ["t"] and sorted(os.listdir(out / "t")) == [io_utils.MARKER_FILE, "v2"]


def test_signal_during_the_swap_waits_for_it(tmp_path, monkeypatch):
  """A SIGTERM arriving between the two renames is handled once the new dir is in place."""
  target = tmp_path / "d"
  with io_utils.atomic_dir(target, kind="k") as tmp:
    open(os.path.join(tmp, "v1"), "w").close()
  seen = []
  monkeypatch.setattr(io_utils, "_terminate", seen.append)
  real_replace, calls = os.replace, []

  def replace_and_signal(src, dst):
    calls.append(src)
    real_replace(src, dst)
    if len(calls) == 1:  # old dir parked: the handler must only note the signal
      io_utils._on_signal(signal.SIGTERM, None)  # pylint: disable=protected-access
      assert not seen

  monkeypatch.setattr(os, "replace", replace_and_signal)
  with io_utils.atomic_dir(target, kind="k") as tmp:
    open(os.path.join(tmp, "v2"), "w").close()
  assert seen == [signal.SIGTERM]
  assert sorted(os.listdir(target)) == [io_utils.MARKER_FILE, "v2"]
