"""memory_budget.py: the memory available under the process's limits, and what cannot
fit refused before it is loaded, with both numbers and the fixes, in one line."""
import glob
import os
import re
import subprocess
import sys
import textwrap

import pytest

import image_cache
import memory_budget
from conftest import REPO_ROOT, write_class_folders


def test_what_cannot_fit_is_refused_naming_both_numbers_and_the_fixes(monkeypatch):
    monkeypatch.setattr(memory_budget, "available_bytes", lambda: 3.0e9)
    memory_budget.check_fits(2.3e9, "the images", "use fewer", reserve=0.7e9)
    with pytest.raises(memory_budget.NotEnoughMemory) as refused:
        memory_budget.check_fits(2.4e9, "the images", "use fewer", reserve=0.7e9)
    message = str(refused.value)
    assert message == ("the images need 2.4 GB and 2.3 GB of memory is free (3.0 GB "
                       "available less 0.7 GB for TensorFlow): use fewer")
    assert isinstance(refused.value, ValueError)  # the scripts' one-line errors


def test_nothing_is_refused_where_the_memory_cannot_be_known(monkeypatch):
    monkeypatch.setattr(memory_budget, "available_bytes", lambda: None)
    memory_budget.check_fits(1e15, "the images", "use fewer")


def run_python(code, limit_bytes_above_now=None):
    """Run `code` in a fresh interpreter, its address space limited (ulimit -v) to
    this much above what it has mapped once numpy and prepare_data are imported."""
    prologue = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {REPO_ROOT!r})
        import numpy as np
        import memory_budget, prepare_data
        extra = {limit_bytes_above_now!r}
        if extra is not None:
            size = [int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                    if l.startswith("VmSize:")][0]
            resource.setrlimit(resource.RLIMIT_AS, (size + extra, resource.RLIM_INFINITY))
    """)
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_an_address_space_limit_bounds_the_memory_available():
    done = run_python("print(memory_budget.available_bytes())", 2_000_000_000)
    assert done.returncode == 0, done.stderr
    assert 1.9e9 < int(done.stdout) <= 2.0e9


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
@pytest.mark.parametrize("per_class, refused", [(6, True), (3, False)])
def test_a_folder_that_cannot_fit_under_a_low_limit_is_refused_before_decoding(
        tmp_path, per_class, refused):
    # 4 classes of 1000 x 1000 RGB images (3 MB each): 24 of them take 72 MB, 12 take
    # 36 MB, and 50 MB is free above the reserve for TensorFlow under the limit.
    folder = write_class_folders(tmp_path / "data", 4, per_class=per_class)
    done = run_python(f"""
        decoded = []
        load_image = prepare_data.load_image
        prepare_data.load_image = lambda *a, **k: decoded.append(1) or load_image(*a, **k)
        try:
            imageset = prepare_data.load_folder({str(folder)!r}, image_size=(1000, 1000),
                                                channels=3)
            print("loaded", imageset.images.shape, len(decoded))
        except memory_budget.NotEnoughMemory as error:
            print("refused", len(decoded), error)
    """, memory_budget.RESERVE_BYTES + 50_000_000)
    assert done.returncode == 0, done.stderr
    if refused:
        assert done.stdout.startswith("refused 0 the 24 images of 1000x1000x3 in ")
        assert re.search(r"need 0\.1 GB and 0\.[01] GB of memory is free", done.stdout)
        assert "--image_size" in done.stdout and "--image_cache=True" in done.stdout
    else:
        assert done.stdout.startswith("loaded (12, 1000, 1000, 3) 12"), done.stdout


def test_train_refuses_images_too_large_for_a_training_step_in_one_line(tmp_path,
                                                                       capsys):
    import train
    folder = write_class_folders(tmp_path / "huge_photos", 6, per_class=2)
    assert train.main(["--dataset=folder", f"--data_dir={folder}",
                       "--image_size=20000,20000", "--epochs=1",
                       f"--out_dir={tmp_path / 'runs'}"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: training steps of 128 images of 20000x20000x3 "
                           "through compact need ")
    assert "--image_size" in line and "--batch_size" in line
    assert not (tmp_path / "runs").exists()
    assert not glob.glob(os.path.join(image_cache.default_dir(), "huge_photos-*"))  # no cache
