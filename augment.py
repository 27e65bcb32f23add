"""Distortions applied to training batches on the fly: Koch et al.'s affine ones,
left-right mirroring and random erasing (augment, flip and erase in configs.py)."""

KOCH_SCALE = (0.8, 1.2)  # Koch et al.'s scale range, for height and width separately
DISTORTIONS = ("rotation", "shear", "scale", "shift", "flip", "erase")


def make_augmenter(image_shape, flip=False, erase=False, seed=0, only=DISTORTIONS):
    """Koch et al.'s affine distortions for a batch of images, on the fly.

    Rotation +-10 degrees, shear +-0.3, scale 0.8-1.2 (height and width each their
    own) and translation +-2 pixels, each applied to an image with probability 0.5;
    with `flip`, also random left-right mirroring (right for faces, wrong for
    characters); with `erase`, random erasing (Zhong et al. 2020): a rectangle of
    2-33% of the image filled with noise, as an occlusion the network must see past.
    `only` keeps just the named steps of DISTORTIONS (to look at one at a time).
    """
    import functools

    import tf_setup  # noqa: F401
    import keras
    import tensorflow as tf

    height, width = image_shape[:2]
    generator = tf.random.Generator.from_seed(seed)

    def shear_about_centre(batch):
        # Keras' RandomShear shears about the image corner, which also shifts the
        # content by up to 0.3 x the image size; Koch's shear keeps the centre fixed.
        # Output pixel (x, y) reads input (x + sx (y - cy), y + sy (x - cx)).
        n = tf.shape(batch)[0]
        sx, sy = (generator.uniform([n], -0.3, 0.3) for _ in range(2))
        cx, cy = (width - 1) / 2, (height - 1) / 2
        one, zero = tf.ones([n]), tf.zeros([n])
        transforms = tf.stack([one, sx, -sx * cy, sy, one, -sy * cx, zero, zero], axis=1)
        return keras.ops.image.affine_transform(batch, transforms, fill_mode="nearest")

    def training(layer):  # preprocessing layers distort only when training=True
        return functools.partial(layer, training=True)

    # RandomZoom's factor z stretches the sampling grid, so the content is scaled by
    # 1 / (1 + z): z from 1/1.2 - 1 to 1/0.8 - 1 scales it by 0.8-1.2.
    zoom = (1 / KOCH_SCALE[1] - 1, 1 / KOCH_SCALE[0] - 1)
    steps = {
        "rotation": training(keras.layers.RandomRotation(10 / 360, fill_mode="nearest",
                                                         seed=seed)),
        "shear": shear_about_centre,
        "scale": training(keras.layers.RandomZoom(zoom, zoom, fill_mode="nearest",
                                                  seed=seed + 2)),
        "shift": training(keras.layers.RandomTranslation(
            2 / height, 2 / width, fill_mode="nearest", seed=seed + 3)),
    }
    if flip:
        steps["flip"] = training(keras.layers.RandomFlip("horizontal", seed=seed + 4))
    if erase:  # factor (1, 1): always erase here; the 0.5 below decides which images
        steps["erase"] = training(keras.layers.RandomErasing(
            factor=(1.0, 1.0), value_range=(0, 255), seed=seed + 5))
    distortions = [step for name, step in steps.items() if name in only]

    def augment(batch):
        for distortion in distortions:
            changed = distortion(batch)
            chosen = generator.uniform([tf.shape(batch)[0], 1, 1, 1]) < 0.5
            batch = tf.where(chosen, changed, batch)
        return batch
    return augment
