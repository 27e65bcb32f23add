"""Import TensorFlow the way this project runs it: quiet, on Keras' TF backend, and
with one inter-op thread, which removes the first-batch stalls measured on 2-core CPUs
(see README, Performance). Import this module before keras or tensorflow."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide C++ info notices on import
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

try:
    tf.config.threading.set_inter_op_parallelism_threads(
        int(os.environ.get("SIAMESE_INTER_OP_THREADS", "1")))
except RuntimeError:
    pass  # TensorFlow already started in this process (e.g. a notebook): keep its threads
