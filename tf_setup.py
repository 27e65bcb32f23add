"""Import TensorFlow the way this project runs it. Import this before keras or tensorflow.

- oneDNN kernels on: TensorFlow enables them by default only on CPUs with AVX-512; on an
  AVX2-only CPU turning them on doubled training speed here (see README, Performance).
- Keras on its TensorFlow backend, and one inter-op thread, which removes the
  first-batch stalls measured on 2-core CPUs.
- The C++ notices TensorFlow prints while it loads are hidden, unless you set
  TF_CPP_MIN_LOG_LEVEL yourself.
- This project's own warnings (a skipped file, say) print as one line, "warning: ...",
  not Python's two lines of source file, line number and code; error_line() makes an
  error's text one readable line.
"""
import os
import re
import warnings

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _import_tensorflow_quietly():
    """Import TensorFlow with the C++ stderr muted: its load-time notices bypass Python."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    saved_stderr, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)


if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
    _import_tensorflow_quietly()

import tensorflow as tf  # noqa: E402

try:
    tf.config.threading.set_inter_op_parallelism_threads(
        int(os.environ.get("SIAMESE_INTER_OP_THREADS", "1")))
except RuntimeError:
    pass  # TensorFlow already started in this process (e.g. a notebook): keep its threads


_python_format = warnings.formatwarning


def _one_line(message, category, filename, lineno, line=None):
    if category is UserWarning:  # ours; others (deprecations) keep where they come from
        return f"warning: {message}\n"
    return _python_format(message, category, filename, lineno, line)


warnings.formatwarning = _one_line


# Where TensorFlow's messages start printing a value: a PerReplica or a tensor runs to
# hundreds of lines of numbers that say nothing about what went wrong.
VALUE_REPRS = ("PerReplica:{", "<tf.Tensor", "tf.Tensor(", "array(")


def error_line(error, limit=600):
    """The text of `error` as one line of at most `limit` characters, cut before any
    value it prints."""
    text = str(error)
    starts = [text.find(start) for start in VALUE_REPRS if start in text]
    if starts:
        text = text[:min(starts)] + "[...]"
    # TensorFlow prefixes the graph function an op ran in, e.g. {{function_node ...}}
    text = " ".join(re.sub(r"\{\{[^}]*\}\}", " ", text).split())
    return text if len(text) <= limit else text[:limit - 5] + "[...]"
