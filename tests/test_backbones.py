"""backbones: every registered base network builds, embeds and says what it needs."""
import numpy as np
import pytest

import keras
import backbones
from backbones import BACKBONES, smallest_input
from siamese_network_funcs import build_siamese_model

# A size each base network is meant for (the inputs its dataset preset produces).
INPUT_SHAPES = {
    "att_faces": (56, 46, 1),  # 112x92 faces, every 2nd pixel
    "faces": (56, 46, 1),
    "faces_small": (56, 46, 1),
    "plantvillage": (112, 112, 1),
    "fruits360": (100, 100, 3),
    "koch": (105, 105, 1),
    "mnist": (28, 28, 1),
    "omniglot": (52, 52, 1),
    "digits": (8, 8, 1),
    "compact": (64, 64, 3),
}


CONV_STACKS = sorted(name for name in BACKBONES if not backbones.is_application(name))


def _numpy_distance(a, b):
    return np.sqrt(np.sum((a - b) ** 2, axis=-1, keepdims=True))


@pytest.mark.parametrize("architecture", CONV_STACKS)
def test_every_architecture_builds_and_embeds(architecture):
    shape = INPUT_SHAPES[architecture]
    keras.utils.set_random_seed(0)
    model, base = build_siamese_model(shape, architecture)
    dim = BACKBONES[architecture]["embedding_dim"]
    images = np.random.default_rng(0).integers(0, 256, (2, *shape)).astype(np.float32)
    embeddings = np.asarray(base(images, training=False))
    assert embeddings.shape == (2, dim)
    assert np.isfinite(embeddings).all()
    distances = np.asarray(model([images, images[::-1]], training=False))
    assert distances.shape == (2, 1)
    np.testing.assert_allclose(distances, _numpy_distance(embeddings, embeddings[::-1]),
                               rtol=1e-4, atol=1e-3)
    keras.backend.clear_session()


def test_every_conv_stack_has_an_input_shape_in_this_test():
    assert set(INPUT_SHAPES) == set(CONV_STACKS)


@pytest.mark.parametrize("architecture", CONV_STACKS)
def test_smallest_input_builds_and_one_pixel_less_is_a_clear_error(architecture):
    smallest = smallest_input(**BACKBONES[architecture])
    build_siamese_model((smallest, smallest + 3, 1), architecture)  # builds: no error
    with pytest.raises(ValueError, match=f"too small for architecture='{architecture}', "
                                         f"which needs at least {smallest}x{smallest}"):
        build_siamese_model((smallest + 3, smallest - 1, 1), architecture)
    keras.backend.clear_session()


@pytest.mark.parametrize("conv_dropout, expected", [(None, 0.25), (0.1, 0.1), (0.0, None)])
def test_conv_dropout_overrides_the_architectures_rate(conv_dropout, expected):
    _, base = build_siamese_model((56, 46, 1), "faces", conv_dropout=conv_dropout)
    rates = [l.rate for l in base.layers if isinstance(l, keras.layers.Dropout)]
    conv_blocks = len(BACKBONES["faces"]["conv"])
    assert rates == ([] if expected is None else [expected] * conv_blocks)


def test_unknown_architecture_raises():
    with pytest.raises(ValueError) as error:
        build_siamese_model((8, 8, 1), "no_such_net")
    message = str(error.value)
    assert "no_such_net" in message
    for name in BACKBONES:
        assert name in message


def test_koch_architecture_follows_the_paper():
    base = backbones.build_conv_stack((105, 105, 1), **BACKBONES["koch"])
    convs = [l for l in base.layers if isinstance(l, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size) for c in convs] == [
        (64, (10, 10)), (128, (7, 7)), (128, (4, 4)), (256, (4, 4))]
    assert len([l for l in base.layers if isinstance(l, keras.layers.MaxPooling2D)]) == 3
    assert base.output_shape == (None, 4096)
    kernel, bias = convs[0].get_weights()
    assert abs(kernel.std() - 1e-2) < 2e-3 and abs(bias.mean() - 0.5) < 5e-3
    dense_kernel, dense_bias = base.layers[-1].get_weights()
    assert abs(dense_kernel.std() - 0.2) < 0.01 and abs(dense_bias.mean() - 0.5) < 5e-3


# --- keras.applications models -----------------------------------------------------

@pytest.mark.parametrize("architecture", sorted(backbones.APPLICATIONS))
def test_every_application_builds_and_embeds_grey_images(architecture):
    keras.utils.set_random_seed(0)
    model, base = build_siamese_model((40, 36, 1), architecture)
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 36, 1))
    embeddings = np.asarray(base(images.astype(np.float32), training=False))
    assert embeddings.shape == (2, BACKBONES[architecture]["embedding_dim"])
    assert np.isfinite(embeddings).all()
    distances = np.asarray(model([images, images[::-1]], training=False))
    # The distance layer floors d^2 at 1e-7: an untrained EfficientNet maps these two
    # images within 1e-5 of each other.
    squared = np.sum((embeddings - embeddings[::-1]) ** 2, axis=-1, keepdims=True)
    np.testing.assert_allclose(distances, np.sqrt(np.maximum(squared, 1e-7)), rtol=1e-3)
    keras.backend.clear_session()


def test_a_grey_image_enters_an_application_as_its_rgb_copy():
    keras.utils.set_random_seed(0)
    grey = backbones.build("mobilenet_v3_small", (40, 36, 1))
    rgb = backbones.build("mobilenet_v3_small", (40, 36, 3))
    rgb.set_weights(grey.get_weights())
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 36, 1)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(rgb(np.repeat(images, 3, axis=-1))),
                               np.asarray(grey(images)), rtol=1e-4)


def test_caffe_preprocessing_matches_keras_resnet50_preprocess_input():
    from network_layers import CaffePreprocess
    rgb = np.random.default_rng(1).uniform(0, 255, (3, 5, 4, 3)).astype(np.float32)
    expected = keras.applications.resnet50.preprocess_input(rgb.copy())
    np.testing.assert_allclose(np.asarray(CaffePreprocess()(rgb)), expected, rtol=1e-6,
                               atol=1e-4)


def test_application_base_reloads_from_keras_file_and_weights_file(tmp_path):
    keras.utils.set_random_seed(0)
    model, base = build_siamese_model((40, 40, 1), "mobilenet_v3_small", normalize=True)
    images = np.random.default_rng(2).integers(0, 256, (3, 40, 40, 1)).astype(np.float32)
    # Untrained batch-norm statistics shrink the features at inference, so the
    # comparisons below are relative.
    expected = base.predict(images, verbose=0)
    assert np.all(np.abs(expected).max(axis=1) > 0)
    base.save(tmp_path / "embedding.keras")
    reloaded = keras.models.load_model(tmp_path / "embedding.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, rtol=1e-4)
    model.save_weights(tmp_path / "model.weights.h5")
    again, again_base = build_siamese_model((40, 40, 1), "mobilenet_v3_small",
                                            normalize=True)
    again.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_allclose(again_base.predict(images, verbose=0), expected, rtol=1e-4)


def test_backbone_weights_file_is_loaded_into_the_application(tmp_path):
    keras.utils.set_random_seed(3)
    donor = keras.applications.MobileNetV3Small(input_shape=(40, 40, 3),
                                                include_top=False, pooling="avg",
                                                weights=None)
    path = str(tmp_path / "mobilenet_v3_small_notop.weights.h5")
    donor.save_weights(path)
    keras.utils.set_random_seed(4)  # another random start, replaced by the file
    base = backbones.build("mobilenet_v3_small", (40, 40, 1), weights=path)
    inner = base.get_layer(donor.name)
    for loaded, saved in zip(inner.get_weights(), donor.get_weights()):
        np.testing.assert_array_equal(loaded, saved)


def test_freeze_below_keeps_the_layers_before_the_named_one():
    base = backbones.build("resnet50", (32, 32, 3), freeze_below="conv5_block1_out")
    inner = base.get_layer("resnet50")
    names = [layer.name for layer in inner.layers]
    cut = names.index("conv5_block1_out")
    assert not any(layer.trainable for layer in inner.layers[:cut])
    assert all(layer.trainable for layer in inner.layers[cut:])
    assert base.get_layer("embedding_dense").trainable
    with pytest.raises(ValueError, match="freeze_below='conv9' is no layer of Mobile"):
        backbones.build("mobilenet_v3_small", (32, 32, 3), freeze_below="conv9")


def test_imagenet_weights_offline_is_one_line_saying_how_to_get_them(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None "
                        "-- [Errno -2] Name or service not known")
    monkeypatch.setattr(keras.applications, "ResNet50", offline)
    with pytest.raises(ValueError) as error:
        backbones.build("resnet50", (32, 32, 3), weights="imagenet")
    message = str(error.value)
    assert "\n" not in message and "could not be downloaded" in message
    assert "--backbone_weights=PATH" in message and "Name or service not known" in message


def test_applications_need_32_pixels():
    with pytest.raises(ValueError, match="needs at least 32x32"):
        backbones.build("efficientnet_b0", (31, 40, 3))


def test_a_saved_application_config_resolves_again_for_resume_and_evaluate():
    # train.py saves the dropout rate it used; an application has none, so the saved
    # config must pass the check that refuses --conv_dropout for applications.
    from configurator import get_config, resolve
    config = get_config(dataset="att_faces_oneshot", architecture="mobilenet_v3_small")
    saved = dict(config, conv_dropout=backbones.conv_dropout_rate(
        config["architecture"], config["conv_dropout"]))
    assert resolve(saved, {})["conv_dropout"] is None
    with pytest.raises(ValueError, match="drop --conv_dropout"):
        resolve(saved, {"conv_dropout": 0.1})
