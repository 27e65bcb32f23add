"""Which images a training step or an evaluation task draws: P x K batches, the
rotated classes of the Omniglot practice, and N-way one-shot tasks."""
import numpy as np


def pk_batches(labels, class_ids, classes_per_batch, images_per_class, n_batches, rng,
               groups=None, batch_groups=0):
    """The P x K sampler: `n_batches` index batches, each P classes x K images.

    Each batch holds `classes_per_batch` distinct classes among `class_ids` (those with
    at least 2 images) and `images_per_class` distinct images of each (with repeats
    only where a class has fewer than K), so every batch has genuine and impostor
    pairs. With `batch_groups` > 0 and `groups` (each class's parent folder), a batch's
    classes come from that many parent folders, filled up from any folder when they
    hold fewer than P: its impostors are then look-alikes of one alphabet, the ones a
    within-alphabet one-shot task asks to tell apart. Returns int32 (n_batches, P * K).
    """
    usable = [(c, np.flatnonzero(labels == c)) for c in class_ids]
    usable = [(c, images) for c, images in usable if len(images) >= 2]
    if len(usable) < 2:
        raise ValueError("pairing='batch' needs at least 2 classes with 2 or more "
                         "images each in every split")
    members = [images for _, images in usable]
    p = min(classes_per_batch, len(members))
    group_of = (np.array([groups[c] for c, _ in usable])
                if batch_groups and groups is not None else None)
    group_names = None if group_of is None else np.unique(group_of)
    batches = np.empty((n_batches, p * images_per_class), np.int32)
    for b in range(n_batches):
        if group_of is None:
            chosen = rng.choice(len(members), p, replace=False)
        else:
            picked = rng.choice(group_names, min(batch_groups, len(group_names)),
                                replace=False)
            inside = np.isin(group_of, picked)
            chosen = np.concatenate([rng.permutation(np.flatnonzero(inside)),
                                     rng.permutation(np.flatnonzero(~inside))])[:p]
        batches[b] = np.concatenate([
            rng.choice(members[c], images_per_class,
                       replace=len(members[c]) < images_per_class) for c in chosen])
    return batches


def pk_schedule(config, classes, counts):
    """{part: index batches (n, P * K)} for each part of `counts` ({"train": n, ...}),
    drawn by pk_batches from `classes` ({part: (labels, class ids, groups)}). Each part
    from its own generator, so the validation batches do not depend on how many
    training batches were drawn (--epochs may change on --resume)."""
    seeds = {"train": config["seed"], "val": [config["seed"], 1]}
    per_class = config["images_per_class"]
    batches = {}
    for name, n in counts.items():
        labels, class_ids, groups = classes[name]
        batches[name] = pk_batches(labels, class_ids, config["batch_size"] // per_class,
                                   per_class, n, np.random.default_rng(seeds[name]),
                                   groups, config["batch_groups"])
    return batches


def describe_batches(config, batches, steps):
    """The P x K batches in words; says when P is capped at the training classes, so
    that batch_size does not mislead."""
    per_class = config["images_per_class"]
    classes_asked = config["batch_size"] // per_class
    classes_per_batch = batches.shape[1] // per_class
    capped = (f" (batch_size={config['batch_size']} asks for {classes_asked} classes; "
              f"training has {classes_per_batch})"
              if classes_per_batch < classes_asked else "")
    return (f"P x K batches: {classes_per_batch} classes x {per_class} images = "
            f"{classes_per_batch * per_class} images per step{capped}, {steps} steps "
            f"per epoch")


def rotated_classes(labels, class_ids, groups):
    """Each class of `class_ids` three more times, turned by 90, 180 and 270 degrees.

    A drawing turned on its side is a character nobody writes, so it is a new class
    for the network to tell apart; the Omniglot literature trains on these 4x classes.
    Returns (labels, class_ids, groups) over "virtual" images: index i + k * N is
    image i turned by k x 90 degrees with label labels[i] + k * C (N images, C =
    len(groups) classes), the same parent folder as its class. Feed these to
    pk_batches and image_dataset(..., rotations=True).
    """
    n_classes = len(groups)
    turns = np.arange(4)
    return (np.concatenate([labels + k * n_classes for k in turns]),
            np.concatenate([np.asarray(class_ids) + k * n_classes for k in turns]),
            list(groups) * 4)


def make_oneshot_trials(labels, class_ids, ways, trials, rng, groups=None):
    """`trials` N-way one-shot tasks among `class_ids`.

    Each task has a query image and `ways` candidates: another image of the query's
    class (the answer) and one image of each of ways-1 other classes. With `groups`
    (the class's parent folder, e.g. the Omniglot alphabet) every task draws its
    classes from one group, as in Koch's within-alphabet protocol.
    Returns queries (T,), candidates (T, ways) and answers (T,): the answer's column.
    """
    class_ids = np.asarray(class_ids)
    members = {c: np.flatnonzero(labels == c) for c in class_ids}
    all_pools = {}
    for c in class_ids:
        all_pools.setdefault(groups[c] if groups is not None else "", []).append(c)
    pools = {k: np.asarray(v) for k, v in all_pools.items() if len(v) >= ways}
    if not pools:
        largest = max(len(v) for v in all_pools.values())
        where = (f"the largest parent folder holds only {largest} of the evaluation "
                 f"classes" if groups is not None
                 else f"there are only {largest} evaluation classes")
        raise ValueError(f"{ways}-way one-shot needs {ways} classes to choose from, "
                         f"but {where}: use --ways={largest} or fewer")
    keys = sorted(pools)
    queries = np.empty(trials, np.int64)
    candidates = np.empty((trials, ways), np.int64)
    answers = rng.integers(0, ways, trials)
    for t in range(trials):
        pool = pools[keys[rng.integers(len(keys))]]
        eligible = [c for c in pool if len(members[c]) >= 2]
        if not eligible:
            raise ValueError("no evaluation class has two images (a query and its one "
                             "shot), so no one-shot task can be drawn: give each class "
                             "at least 2 images")
        target = eligible[rng.integers(len(eligible))]
        others = rng.choice(pool[pool != target], ways - 1, replace=False)
        query, positive = rng.choice(members[target], 2, replace=False)
        row = [members[c][rng.integers(len(members[c]))] for c in others]
        row.insert(answers[t], positive)
        queries[t], candidates[t] = query, row
    return queries, candidates, answers
