"""tf_setup: the project's own warnings print as one line, and error_line makes an
error's text one readable line."""
import numpy as np
import tensorflow as tf

import tf_setup


def test_an_error_line_stops_before_a_printed_value():
    values = tf.constant(np.arange(4000, dtype=np.float32).reshape(10, 20, 20))
    error = ValueError(f"Attempt to convert a value (PerReplica:{{\n  0: {values!r}\n}}) "
                       f"with an unsupported type to a Tensor.")
    assert tf_setup.error_line(error) == "Attempt to convert a value ([...]"


def test_an_error_line_is_one_line_of_at_most_the_limit():
    error = RuntimeError("{{function_node __wrapped__Op}} Collective ops is aborted by:\n"
                         + "x " * 400)
    line = tf_setup.error_line(error, limit=100)
    assert line.startswith("Collective ops is aborted by: x x")
    assert len(line) == 100 and line.endswith("[...]") and "\n" not in line
    assert tf_setup.error_line(ValueError("short\ntext")) == "short text"


def test_project_warnings_print_as_one_line():
    import warnings

    # tf_setup (imported above, as every entry script does) set the format.
    assert (warnings.formatwarning("skipping a/notes.txt: not an image file", UserWarning,
                                   "prepare_data.py", 50)
            == "warning: skipping a/notes.txt: not an image file\n")
    other = warnings.formatwarning("old API", DeprecationWarning, "lib.py", 7)
    assert "DeprecationWarning" in other and "lib.py:7" in other
