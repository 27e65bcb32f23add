"""augment: Koch's affine distortions, mirroring and random erasing, each within its
published range and applied to about half the images."""
import numpy as np

import augment


def test_augmenter_applies_each_distortion_with_probability_half_within_range():
    # A bright 4x4 square in the centre of a 32x32 image: rotation, shear and scale
    # about the centre keep its centroid near the centre, translation moves it by at
    # most 2 pixels. An image escapes all four distortions with probability 1/16.
    image = np.zeros((32, 32, 1), np.float32)
    image[14:18, 14:18] = 255.0
    batch = np.repeat(image[None], 400, axis=0)
    distort = augment.make_augmenter((32, 32, 1), flip=False, seed=3)
    out = np.asarray(distort(batch))
    assert out.shape == batch.shape
    unchanged = np.all(np.isclose(out, batch, atol=1e-3), axis=(1, 2, 3))
    assert 8 <= unchanged.sum() <= 45, unchanged.sum()  # expected 25 of 400
    rows, cols = np.mgrid[:32, :32]
    mass = out[..., 0].sum(axis=(1, 2))
    centre_r = (out[..., 0] * rows).sum(axis=(1, 2)) / mass
    centre_c = (out[..., 0] * cols).sum(axis=(1, 2)) / mass
    shift = np.hypot(centre_r - 15.5, centre_c - 15.5)
    assert shift.max() <= 2 * np.sqrt(2) + 0.75
    assert np.mean(shift > 0.5) > 0.2  # translation is applied to many images
    again = np.asarray(augment.make_augmenter((32, 32, 1), seed=3)(batch))
    np.testing.assert_allclose(again, out)  # seeded


def test_scale_step_scales_height_and_width_each_by_0_8_to_1_2():
    # Two dots 16 px apart across and two 16 px apart down, about the centre of a
    # 41x41 image: after the scale step alone their spacing / 16 is the content's
    # scale along each axis, Koch's 0.8-1.2 drawn for each axis on its own.
    image = np.zeros((41, 41, 1), np.float32)
    for row, col in ((20, 12), (20, 28), (12, 20), (28, 20)):
        image[row, col] = 255.0
    batch = np.repeat(image[None], 2000, axis=0)
    out = np.asarray(augment.make_augmenter((41, 41, 1), seed=0,
                                                 only=("scale",))(batch))[..., 0]
    scaled = ~np.all(np.isclose(out, batch[..., 0], atol=1e-3), axis=(1, 2))
    assert 900 <= scaled.sum() <= 1100  # probability 0.5
    axis = np.arange(41)

    def spacing(profiles):  # centroid of the far half minus that of the near half
        near, far = profiles[:, :20], profiles[:, 21:]
        return ((far * axis[21:]).sum(1) / far.sum(1)
                - (near * axis[:20]).sum(1) / near.sum(1)) / 16

    across = spacing(out[scaled][:, 19:22, :].sum(axis=1))
    down = spacing(out[scaled][:, :, 19:22].sum(axis=2))
    for scale in (across, down):
        assert 0.78 <= scale.min() < 0.85 and 1.15 < scale.max() <= 1.22
        assert abs(np.median(scale) - 1.0) < 0.06
    assert abs(np.corrcoef(across, down)[0, 1]) < 0.2  # each axis its own


def test_random_erasing_covers_one_rectangle_of_2_to_33_percent_in_half_the_images():
    # A uniform grey image: the affine distortions (nearest fill) leave it as it is, so
    # every changed pixel comes from erasing.
    batch = np.full((400, 40, 30, 1), 128.0, np.float32)
    plain = np.asarray(augment.make_augmenter((40, 30, 1), seed=5)(batch))
    np.testing.assert_allclose(plain, batch, atol=1e-3)
    out = np.asarray(augment.make_augmenter((40, 30, 1), erase=True, seed=5)(batch))
    changed = ~np.isclose(out, batch, atol=1e-3)[..., 0]
    erased = changed.any(axis=(1, 2))
    assert 160 <= erased.sum() <= 240, erased.sum()  # expected 200 of 400
    for mask in changed[erased]:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        assert 0.01 <= box / mask.size <= 0.34
        assert mask.sum() >= 0.9 * box  # one filled rectangle (noise may hit 128)
