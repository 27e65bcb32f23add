"""The figures a run folder holds. Matplotlib's file-only backend: no window opens."""
import os

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metrics import EUCLIDEAN  # noqa: E402


def save_figure(figure, path):
    """Write to a temporary name, then rename: a crash never leaves half a PNG."""
    temporary = path + ".tmp.png"
    figure.savefig(temporary, dpi=110, bbox_inches="tight")
    plt.close(figure)
    os.replace(temporary, path)


def plot_history(history, run_dir):
    """accuracy.png and loss.png: training vs validation per epoch (as the PlantVillage
    project plots them)."""
    epochs = range(1, len(history.get("loss", [])) + 1)
    curves = {"accuracy": [("accuracy", "b-o", "Training pair accuracy"),
                           ("val_accuracy", "r-o", "Validation pair accuracy"),
                           ("val_oneshot", "g-s", "Validation N-way one-shot")],
              "loss": [("loss", "b-o", "Training loss"),
                       ("val_loss", "r-o", "Validation loss")]}
    for metric, label in (("accuracy", "Accuracy"), ("loss", "Loss")):
        present = [curve for curve in curves[metric] if curve[0] in history]
        if not present:
            continue
        figure, axes = plt.subplots(figsize=(6, 4))
        for key, style, name in present:
            axes.plot(epochs, history[key], style, markersize=3, label=name)
        axes.set_title(f"Training and validation {metric}")
        axes.set_xlabel("Epoch")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
        save_figure(figure, os.path.join(run_dir, f"{metric}.png"))


def plot_roc(fpr, tpr, auc, eer, path):
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot(fpr, tpr, "b-", label=f"model (AUC {auc:.3f}, EER {eer:.3f})")
    axes.plot([0, 1], [0, 1], "k--", alpha=0.5, label="chance")
    axes.set_xlabel("False accept rate (impostor pairs called 'same')")
    axes.set_ylabel("True accept rate (genuine pairs called 'same')")
    axes.set_title("Verification ROC on test pairs")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    save_figure(figure, path)


def plot_distance_hist(distances, labels, threshold, path):
    figure, axes = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, max(float(np.max(distances)), threshold) * 1.05, 50)
    axes.hist(distances[labels == 1], bins, alpha=0.6, color="g", label="genuine (same)")
    axes.hist(distances[labels == 0], bins, alpha=0.6, color="r",
              label="impostor (different)")
    axes.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    axes.set_xlabel("Embedding distance")
    axes.set_ylabel("Test pairs")
    axes.set_title("Distances of genuine and impostor test pairs")
    axes.legend()
    save_figure(figure, path)


def plot_oneshot_curve(curve, path):
    figure, axes = plt.subplots(figsize=(6, 4))
    ways = np.asarray(curve["ways"])
    axes.plot(ways, curve["model"], "b-o", label="Siamese network")
    axes.plot(ways, curve["pixel_nn"], "g-s", label="nearest neighbour on pixels")
    axes.plot(ways, 1.0 / ways, "k--", label="chance (1/N)")
    axes.set_xlabel("N (candidates per one-shot task)")
    axes.set_ylabel("One-shot accuracy")
    axes.set_ylim(0, 1.02)
    axes.set_title("N-way one-shot accuracy on unseen classes")
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure(figure, path)


def plot_oneshot_examples(imageset, embeddings, tasks, path, n_examples=4,
                          scorer=EUCLIDEAN):
    """A few tasks: the query, its candidates, the pick (box) and whether it was right."""
    queries, candidates, answers = (t[:n_examples] for t in tasks)
    ways = candidates.shape[1]
    shown = min(ways, 10)  # the answer and the nearest are always among those shown
    figure, grid = plt.subplots(len(queries), shown + 1,
                                figsize=(1.3 * (shown + 1), 1.5 * len(queries)),
                                squeeze=False)
    for row, (query, cands, answer) in enumerate(zip(queries, candidates, answers)):
        distances = scorer(embeddings[cands], embeddings[query])
        pick = int(np.argmin(distances))
        order = [int(answer)] + ([pick] if pick != answer else [])
        order += [i for i in range(ways) if i not in order][:shown - len(order)]
        _show(grid[row, 0], imageset.images[query], "query", "black")
        for column, i in enumerate(order, start=1):
            colour = "green" if i == answer else ("red" if i == pick else "gray")
            title = f"d={distances[i]:.2f}" + (" pick" if i == pick else "")
            _show(grid[row, column], imageset.images[cands[i]], title, colour,
                  framed=i in (pick, answer))
    figure.suptitle(f"{ways}-way one-shot tasks (green = right class, red = wrong pick)")
    save_figure(figure, path)


def _show(axes, image, title, colour, framed=False):
    axes.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None)
    axes.set_title(title, fontsize=7, color=colour)
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3 if framed else 0.5)


def plot_embeddings(embeddings, labels, class_names, path, max_points=1500, seed=0):
    """2-D t-SNE of the test embeddings, coloured by class (PCA first above 50 dims)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(labels))[:max_points]
    vectors, labels = embeddings[keep], labels[keep]
    if vectors.shape[1] > 50:  # PCA cannot keep more components than there are points
        components = min(50, len(vectors))
        vectors = PCA(components, random_state=seed).fit_transform(vectors)
    perplexity = max(2.0, min(30.0, (len(vectors) - 1) / 3))
    points = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        vectors)
    figure, axes = plt.subplots(figsize=(6, 6))
    classes = np.unique(labels)
    colours = plt.get_cmap("tab20", max(len(classes), 1))
    for i, c in enumerate(classes):
        mine = labels == c
        axes.scatter(points[mine, 0], points[mine, 1], s=12, color=colours(i % 20),
                     label=class_names[c] if len(classes) <= 20 else None)
    if len(classes) <= 20:
        axes.legend(fontsize=7, markerscale=1.5, loc="best")
    axes.set_title(f"t-SNE of test embeddings ({len(classes)} unseen classes)")
    axes.set_xticks([])
    axes.set_yticks([])
    save_figure(figure, path)


def plot_lake_run(name, gallery, queries, answers, picks, path, per_row=4):
    """One of Lake's runs: its one-shot drawings (the gallery) on top, then each query
    beside the gallery drawing the network picked, framed green when it is the
    query's character and red when not, with the right drawing after a wrong pick."""
    rows = -(-len(queries) // per_row)
    figure = plt.figure(figsize=(1.1 * 3 * per_row, 1.3 * (rows + 1.4)))
    layout = figure.add_gridspec(2, 1, height_ratios=[1, 1.3 * rows], hspace=0.25)
    strip = layout[0].subgridspec(1, len(gallery)).subplots()
    for i, (axes, drawing) in enumerate(zip(np.atleast_1d(strip), gallery)):
        _show(axes, drawing, f"{i + 1}", "gray")
    grid = layout[1].subgridspec(rows, 3 * per_row).subplots(squeeze=False)
    for axes in grid.ravel():
        axes.axis("off")
    for i, (query, answer, pick) in enumerate(zip(queries, answers, picks)):
        row, column = divmod(i, per_row)
        cells = grid[row, 3 * column:3 * column + 3]
        right = pick == answer
        for axes in cells[:2 if right else 3]:
            axes.axis("on")
        _show(cells[0], query, f"query {i + 1}", "black")
        _show(cells[1], gallery[pick], f"pick {pick + 1}: right" if right
              else f"pick {pick + 1}: wrong", "green" if right else "red", framed=True)
        if not right:
            _show(cells[2], gallery[answer], f"right: {answer + 1}", "green")
    correct = int(np.sum(np.asarray(picks) == np.asarray(answers)))
    figure.suptitle(f"Lake et al.'s {name}: the {len(gallery)} one-shot drawings (top); "
                    f"{correct} of {len(queries)} queries matched to their character")
    save_figure(figure, path)


def plot_how_it_works(images, path):
    """The README's diagram: two shared-weight towers, the distance and the loss; pair
    batches against P x K batches; an N-way one-shot task. `images`: 6 uint8 drawings,
    0 and 1 of one character, 2 to 5 of another character each."""
    figure = plt.figure(figsize=(13, 4.6))
    box = dict(boxstyle="round,pad=0.4", facecolor="#e8eef7", edgecolor="#4a6fa5")
    arrow = dict(arrowstyle="->", color="#333333", lw=1.3)

    towers = figure.add_axes([0.0, 0.0, 0.42, 1.0])
    towers.set_xlim(0, 10)
    towers.set_ylim(0, 10)
    towers.axis("off")
    towers.set_title("1. one network, two inputs", fontsize=11)
    for y, image, name in ((7.2, images[0], "a"), (1.6, images[1], "b")):
        towers.imshow(image.squeeze(), cmap="gray", extent=(0.2, 1.8, y - 0.8, y + 0.8))
        towers.annotate("", (3.0, y), (1.9, y), arrowprops=arrow)
        towers.text(4.2, y, "CNN", ha="center", va="center", fontsize=10, bbox=box)
        towers.annotate("", (6.0, y), (5.3, y), arrowprops=arrow)
        towers.text(6.6, y, f"embedding {name}", ha="left", va="center", fontsize=9)
        towers.annotate("", (7.6, 4.9 if y > 4 else 4.1), (7.6, y - 0.5 if y > 4 else y + 0.5),
                        arrowprops=arrow)
    towers.text(4.2, 4.4, "shared\nweights", ha="center", va="center", fontsize=8,
                color="#4a6fa5")
    towers.text(7.6, 4.5, "d = ||a - b||", ha="center", va="center", fontsize=10,
                bbox=dict(box, facecolor="#f7efe2", edgecolor="#b07d2b"))
    towers.text(5.0, 0.05, "loss: small d for genuine pairs (label 1), large for impostors (0)",
                ha="center", va="bottom", fontsize=8.5)

    batches = figure.add_axes([0.44, 0.08, 0.24, 0.84])
    batches.axis("off")
    batches.set_xlim(0, 10)
    batches.set_ylim(0, 10)
    batches.set_title("2. what one training step sees", fontsize=11)
    batches.text(0.2, 8.6, "pairing=\"pairs\": batch_size pairs,\neach genuine or impostor",
                 fontsize=8.5, va="top")
    batches.text(0.2, 5.6, "pairing=\"batch\": P classes x K images;\nevery pair inside the "
                 "batch is scored\n(triplet, supcon, contrastive)", fontsize=8.5, va="top")
    colours = plt.get_cmap("tab10")
    for p in range(4):
        for k in range(3):
            batches.add_patch(plt.Rectangle((0.6 + 2.2 * p + 0.6 * k, 1.0), 0.5, 0.9,
                                            color=colours(p)))
    batches.text(0.5, 0.3, "P = 4 classes (colours) x K = 3 images", fontsize=8)

    task = figure.add_axes([0.70, 0.08, 0.30, 0.84])
    task.axis("off")
    task.set_xlim(0, 10)
    task.set_ylim(0, 10)
    task.set_title("3. N-way one-shot: which candidate?", fontsize=11)
    task.imshow(images[0].squeeze(), cmap="gray", extent=(3.9, 6.1, 7.0, 9.2))
    task.text(5.0, 6.6, "query", ha="center", fontsize=8.5)
    for i, image in enumerate([images[1]] + list(images[2:6])):
        x = 0.3 + 1.95 * i
        task.imshow(image.squeeze(), cmap="gray", extent=(x, x + 1.6, 3.0, 4.6))
        if i == 0:
            task.add_patch(plt.Rectangle((x - 0.1, 2.9), 1.8, 1.8, fill=False,
                                         edgecolor="green", lw=2.5))
    task.text(5.0, 2.2, "N candidates, one of each class, one shot each:\nthe nearest "
              "embedding is the answer (green)", ha="center", va="top", fontsize=8.5)
    save_figure(figure, path)


if __name__ == "__main__":  # python plots.py: redraw docs/how_it_works.png
    import prepare_data

    mini = prepare_data.load_omniglot_mini()
    alphabet = [c for c, g in enumerate(mini.groups) if g == "Greek"]
    first = np.flatnonzero(mini.labels == alphabet[0])
    others = [np.flatnonzero(mini.labels == c)[0] for c in alphabet[1:5]]
    plot_how_it_works(mini.images[[first[0], first[1], *others]],
                      os.path.join(os.path.dirname(os.path.abspath(__file__)), "docs",
                                   "how_it_works.png"))
