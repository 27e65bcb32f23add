"""The omniglot preset on the real background set (skipped when
$SIAMESE_DATA_DIR/omniglot/images_background is absent): Koch's alphabet-disjoint
protocol, checked on the data rather than on a synthetic tree."""
import numpy as np

import evaluate
import prepare_data
from configurator import get_config


def test_preset_splits_whole_alphabets_and_draws_tasks_within_one(omniglot_dir):
    config = get_config(dataset="omniglot", data_dir=omniglot_dir)
    imageset = prepare_data.load_dataset(config)
    assert imageset.images.shape == (19280, 52, 52, 1)  # 964 characters x 20 drawings
    assert len(imageset.class_names) == 964 and len(set(imageset.groups)) == 30

    splits = prepare_data.build_splits(imageset, config)
    alphabets = {name: {imageset.groups[c] for c in class_ids}
                 for name, class_ids in splits.class_split.items()}
    assert [len(alphabets[name]) for name in ("train", "val", "test")] == [19, 5, 6]
    assert not (alphabets["train"] & alphabets["val"] or alphabets["train"]
                & alphabets["test"] or alphabets["val"] & alphabets["test"])
    for class_ids in splits.class_split.values():  # every character of an alphabet
        for alphabet in {imageset.groups[c] for c in class_ids}:
            assert {c for c in class_ids if imageset.groups[c] == alphabet} == \
                {c for c, g in enumerate(imageset.groups) if g == alphabet}

    queries, candidates, answers = evaluate.validation_tasks(imageset, splits, config)
    assert candidates.shape == (config["trials"], 20)
    for query, row, answer in zip(queries, candidates, answers):
        classes = imageset.labels[row]
        assert len(set(classes)) == 20 and classes[answer] == imageset.labels[query]
        assert len({imageset.groups[c] for c in classes}) == 1
        assert imageset.groups[classes[0]] in alphabets["val"]

    labels, class_ids, _ = prepare_data.rotated_classes(
        imageset.labels, splits.class_split["train"], imageset.groups)
    assert len(class_ids) == 4 * len(splits.class_split["train"])
    assert np.isin(labels[np.isin(labels, class_ids)] % 964,
                   splits.class_split["train"]).all()
