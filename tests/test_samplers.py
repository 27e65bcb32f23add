"""samplers: P x K batches, rotated classes and N-way one-shot tasks, drawn as
documented and reproducibly from a seed."""
import numpy as np
import pytest

import samplers


def test_pk_batches_hold_p_distinct_classes_of_k_distinct_images():
    labels = np.repeat(np.arange(8), 5)  # 8 classes x 5 images
    class_ids = np.array([0, 2, 3, 5, 6, 7])
    batches = samplers.pk_batches(labels, class_ids, 4, 3, 20,
                                      np.random.default_rng(0))
    assert batches.shape == (20, 12) and batches.dtype == np.int32
    for batch in batches:
        classes, counts = np.unique(labels[batch], return_counts=True)
        assert len(classes) == 4 and set(classes) <= set(class_ids)
        assert np.all(counts == 3)
        assert len(np.unique(batch)) == 12  # no image twice: 5 images >= K
    again = samplers.pk_batches(labels, class_ids, 4, 3, 20, np.random.default_rng(0))
    np.testing.assert_array_equal(batches, again)


def test_pk_batches_repeat_images_only_for_classes_smaller_than_k():
    labels = np.array([0, 0, 1, 1, 1, 1, 2])  # class 2 has one image: not usable
    batches = samplers.pk_batches(labels, [0, 1, 2], 5, 4, 10,
                                      np.random.default_rng(1))
    assert batches.shape == (10, 8)  # P capped at the 2 usable classes
    for batch in batches:
        assert set(labels[batch]) == {0, 1}
        assert len(np.unique(batch[labels[batch] == 1])) == 4


def test_pk_batches_draw_their_classes_from_batch_groups_parent_folders():
    # 12 classes x 3 images in 3 alphabets: a (classes 0-5), b (6-9), c (10-11)
    labels = np.repeat(np.arange(12), 3)
    groups = ["a"] * 6 + ["b"] * 4 + ["c"] * 2
    batches = samplers.pk_batches(labels, np.arange(12), 4, 2, 200,
                                      np.random.default_rng(0), groups, batch_groups=1)
    seen = set()
    for batch in batches:
        classes = np.unique(labels[batch])
        assert len(classes) == 4
        in_batch = [groups[c] for c in classes]
        # one alphabet's classes; only alphabet c (2 classes) needs filling up
        if len(set(in_batch)) == 1:
            seen.add(in_batch[0])
        else:
            assert in_batch.count("c") == 2
            seen.add("c")
    assert seen == {"a", "b", "c"}
    again = samplers.pk_batches(labels, np.arange(12), 4, 2, 200,
                                    np.random.default_rng(0), groups, batch_groups=1)
    np.testing.assert_array_equal(batches, again)


def test_pk_batches_ignore_batch_groups_without_groups_and_by_default():
    labels = np.repeat(np.arange(6), 3)
    plain = samplers.pk_batches(labels, np.arange(6), 3, 2, 5, np.random.default_rng(4))
    for groups, batch_groups in ((None, 2), (["x"] * 3 + ["y"] * 3, 0)):
        np.testing.assert_array_equal(
            plain, samplers.pk_batches(labels, np.arange(6), 3, 2, 5,
                                           np.random.default_rng(4), groups, batch_groups))


def test_pk_batches_need_two_usable_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        samplers.pk_batches(np.array([0, 0, 1]), [0, 1], 2, 2, 1,
                                np.random.default_rng(0))


def test_rotated_classes_add_three_turned_copies_of_each_training_class():
    labels = np.array([0, 0, 1, 1, 2, 2], np.int32)  # 3 classes, 6 images
    groups = ["a", "a", "b"]
    virtual_labels, class_ids, virtual_groups = samplers.rotated_classes(
        labels, [0, 2], groups)
    assert len(virtual_labels) == 4 * len(labels)
    # image i turned k times is index i + 6k, a class of its own: label + 3k
    for k in range(4):
        np.testing.assert_array_equal(virtual_labels[6 * k:6 * (k + 1)], labels + 3 * k)
    np.testing.assert_array_equal(class_ids, [0, 2, 3, 5, 6, 8, 9, 11])
    assert [virtual_groups[c] for c in class_ids] == ["a", "b"] * 4
    batches = samplers.pk_batches(virtual_labels, class_ids, 4, 2, 50,
                                      np.random.default_rng(0), virtual_groups)
    assert set(virtual_labels[batches.ravel()]) == set(class_ids)  # class 1 never
    assert all(len(set(virtual_labels[b])) == 4 for b in batches)


def _labels_and_groups():
    labels = np.repeat(np.arange(12), 4)  # 12 classes x 4 images
    groups = ["alpha"] * 6 + ["beta"] * 6  # class -> its parent folder
    return labels, groups


@pytest.mark.parametrize("within_group", [False, True])
def test_oneshot_tasks_have_exactly_one_candidate_of_the_query_class(within_group):
    labels, groups = _labels_and_groups()
    class_ids = np.arange(12)
    queries, candidates, answers = samplers.make_oneshot_trials(
        labels, class_ids, 5, 300, np.random.default_rng(0),
        groups if within_group else None)
    assert candidates.shape == (300, 5)
    for query, row, answer in zip(queries, candidates, answers):
        same = labels[row] == labels[query]
        assert same.sum() == 1 and same[answer]
        assert row[answer] != query  # the answer is another image of the class
        assert len(set(labels[row])) == 5  # one image of each of 5 classes
        if within_group:
            assert len({groups[c] for c in labels[row]}) == 1
    assert set(answers) == set(range(5))  # the answer's position varies


def test_oneshot_tasks_mix_groups_without_within_group():
    labels, groups = _labels_and_groups()
    _, candidates, _ = samplers.make_oneshot_trials(labels, np.arange(12), 5, 200,
                                                   np.random.default_rng(1))
    mixed = [len({groups[c] for c in labels[row]}) > 1 for row in candidates]
    assert any(mixed)


def test_oneshot_tasks_are_deterministic_for_a_seed_and_use_only_given_classes():
    labels, _ = _labels_and_groups()
    class_ids = np.array([1, 3, 5, 7, 9])
    first = samplers.make_oneshot_trials(labels, class_ids, 3, 50, np.random.default_rng(7))
    again = samplers.make_oneshot_trials(labels, class_ids, 3, 50, np.random.default_rng(7))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert set(labels[first[1].ravel()]) <= set(class_ids)


def test_oneshot_tasks_need_enough_classes_and_say_how_many_there_are():
    labels, groups = _labels_and_groups()
    with pytest.raises(ValueError, match="--ways=6"):
        samplers.make_oneshot_trials(labels, np.arange(12), 7, 10,
                                    np.random.default_rng(0), groups)


def test_too_few_classes_for_n_way_one_shot_says_how_many_there_are():
    labels = np.repeat(np.arange(3), 2)
    with pytest.raises(ValueError) as error:
        samplers.make_oneshot_trials(labels, np.arange(3), 5, 10, np.random.default_rng(0))
    assert str(error.value) == ("5-way one-shot needs 5 classes to choose from, but "
                                "there are only 3 evaluation classes: use --ways=3 or "
                                "fewer")
    with pytest.raises(ValueError, match="no evaluation class has two images"):
        samplers.make_oneshot_trials(np.arange(3), np.arange(3), 3, 10,
                                    np.random.default_rng(0))


def test_pk_schedule_draws_validation_batches_that_do_not_depend_on_training_length():
    labels = np.repeat(np.arange(10), 4)
    classes = {"train": (labels, np.arange(6), None), "val": (labels, np.arange(6, 10), None)}
    config = dict(seed=3, images_per_class=2, batch_size=8, batch_groups=0)
    short = samplers.pk_schedule(config, classes, {"train": 5, "val": 3})
    long = samplers.pk_schedule(config, classes, {"train": 50, "val": 3})
    np.testing.assert_array_equal(short["val"], long["val"])
    np.testing.assert_array_equal(short["train"], long["train"][:5])
    assert short["train"].shape == (5, 8) and short["val"].shape == (3, 8)
    assert set(labels[short["val"].ravel()]) <= set(range(6, 10))


def test_describe_batches_says_when_p_is_capped_at_the_classes_there_are():
    config = dict(images_per_class=4, batch_size=128)
    full = np.zeros((2, 128), np.int32)
    capped = np.zeros((2, 24), np.int32)  # 6 classes x 4 where 32 were asked for
    assert samplers.describe_batches(config, full, 10) == (
        "P x K batches: 32 classes x 4 images = 128 images per step, 10 steps per epoch")
    assert "(batch_size=128 asks for 32 classes; training has 6)" in (
        samplers.describe_batches(config, capped, 10))
