"""Where training time goes: the input pipeline alone, then training with and without
XLA, and pairs scored per image embedded (per-pair vs in-batch).

    python benchmarks/pipeline.py [--data_dir=../shared/data] [--steps=40]

1. The tf.data pipeline with no model: pairs/s that prepare_data.pair_dataset delivers
   (gather from the uint8 array, cast), as built (parallel map + prefetch), with a
   sequential map and no prefetch, and with Koch's distortions on.
2. Training the AT&T tutorial's network (56x46, batch 128, contrastive) for --steps
   steps: pairs/s with jit_compile off (the default) and on.
3. In-batch pairing (att_faces_oneshot: faces network, 128-image P x K batches, triplet
   loss) against per-pair batches of the same network: images embedded per second, and
   the pairs each step scores.
Run it on an otherwise idle machine; each figure is the median step after one warm-up.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tf_setup  # noqa: F401,E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import augment  # noqa: E402
import prepare_data  # noqa: E402
import samplers  # noqa: E402
import siamese_network_funcs  # noqa: E402
from configurator import get_config  # noqa: E402

SEED = 1337


def load(data_dir):
    faces = os.path.join(data_dir, "att_faces")
    if os.path.isdir(faces):
        return prepare_data.load_folder(faces, downsample=2), "AT&T faces, 56x46"
    digits = prepare_data.load_digits()
    big = np.repeat(np.repeat(digits.images, 7, axis=1), 6, axis=2)[:, :56, :46]
    return prepare_data.ImageSet(big, digits.labels, digits.class_names, digits.groups,
                                 digits.paths, (56, 46)), "digits resized to 56x46"


def median_rate(iterator, per_step, steps):
    """Items per second over `steps` steps of iterator (median step, after a warm-up)."""
    next(iterator)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        next(iterator)
        times.append(time.perf_counter() - started)
    return per_step / float(np.median(times))


def pipeline_only(imageset, pairs, y, batch, steps):
    built = prepare_data.pair_dataset(imageset.images, pairs, y, batch, shuffle=True,
                                      seed=SEED)
    pixels = tf.constant(imageset.images)

    def gather(batch_pairs, labels):
        take = lambda i: tf.cast(tf.gather(pixels, batch_pairs[:, i]), tf.float32)  # noqa: E731
        return (take(0), take(1)), labels

    sequential = tf.data.Dataset.from_tensor_slices((pairs, y)).repeat().batch(
        batch).map(gather)
    distorted = prepare_data.pair_dataset(
        imageset.images, pairs, y, batch, shuffle=True, seed=SEED,
        augment=augment.make_augmenter(imageset.images.shape[1:], seed=SEED))
    return {name: median_rate(iter(data), batch, steps) for name, data in
            (("as built: parallel map + prefetch", built),
             ("sequential map, no prefetch", sequential),
             ("as built + Koch's distortions", distorted))}


def training_rate(fitted, data, per_step, steps):
    ends = []
    timer = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
    fitted.fit(data, epochs=1, steps_per_epoch=steps + 1, callbacks=[timer], shuffle=False,
               verbose=0)
    return per_step / float(np.median(np.diff(ends)))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=os.path.join("..", "shared", "data"))
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    imageset, source = load(args.data_dir)
    everyone = np.arange(len(imageset.class_names))
    pairs, y = prepare_data.make_pairs(imageset.labels, everyone, 10000, 10000,
                                       np.random.default_rng(SEED))
    batch = 128
    print(f"images: {source}; batch {batch}; median of {args.steps} steps\n")

    print("1. input pipeline alone (pairs/s):")
    for name, rate in pipeline_only(imageset, pairs, y, batch, args.steps).items():
        print(f"   {name:36s} {rate:10,.0f}")

    print("\n2. training the AT&T tutorial's network (pairs/s):")
    data = prepare_data.pair_dataset(imageset.images, pairs, y, batch, shuffle=True,
                                     seed=SEED)
    for jit in (False, True):
        keras.utils.set_random_seed(SEED)
        model, _ = siamese_network_funcs.build_siamese_model(imageset.images.shape[1:],
                                                             "att_faces")
        siamese_network_funcs.compile_network(
            get_config(dataset="att_faces", jit_compile=jit), model, None)
        print(f"   jit_compile={jit!s:5s} {training_rate(model, data, batch, args.steps):10,.0f}")

    print("\n3. the faces network, per-pair vs in-batch (att_faces_oneshot):")
    config = get_config(dataset="att_faces_oneshot")
    keras.utils.set_random_seed(SEED)
    model, base = siamese_network_funcs.build_siamese_model(
        imageset.images.shape[1:], "faces", normalize=True)
    siamese_network_funcs.compile_network(
        dict(config, loss="contrastive", distance="euclidean", pairing="pairs"), model, base)
    pair_rate = training_rate(model, data, batch, args.steps)
    # The same layers as the pair model's (a projection head is the embedding layer).
    siamese_network_funcs.compile_network(dict(config, projection_head=False), model, base)
    k = config["images_per_class"]
    batches = samplers.pk_batches(imageset.labels, everyone, batch // k, k,
                                  args.steps + 2, np.random.default_rng(SEED))
    images = prepare_data.image_dataset(imageset.images, imageset.labels, batches)
    image_rate = training_rate(base, images, batch, args.steps)
    per_batch_pairs = batch * (batch - 1) // 2
    print(f"   per-pair batches: {2 * pair_rate:8,.0f} images/s, {batch} pairs per "
          f"{2 * batch} images -> {pair_rate:10,.0f} pairs/s")
    print(f"   P x K batches:    {image_rate:8,.0f} images/s, {per_batch_pairs:,} pairs "
          f"per {batch} images -> {image_rate * (batch - 1) / 2:10,.0f} pairs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
