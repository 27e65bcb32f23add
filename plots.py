"""The figures a run folder holds. Matplotlib's file-only backend: no window opens."""
import os

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(figure, path):
    """Write to a temporary name, then rename: a crash never leaves half a PNG."""
    temporary = path + ".tmp.png"
    figure.savefig(temporary, dpi=110, bbox_inches="tight")
    plt.close(figure)
    os.replace(temporary, path)


def plot_history(history, run_dir):
    """accuracy.png and loss.png: training vs validation per epoch (seed 000's plots)."""
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


def plot_oneshot_examples(imageset, embeddings, tasks, path, n_examples=4, head=None):
    """A few tasks: the query, its candidates, the pick (box) and whether it was right."""
    from metrics import dissimilarity

    queries, candidates, answers = (t[:n_examples] for t in tasks)
    ways = candidates.shape[1]
    shown = min(ways, 10)  # the answer and the nearest are always among those shown
    figure, grid = plt.subplots(len(queries), shown + 1,
                                figsize=(1.3 * (shown + 1), 1.5 * len(queries)),
                                squeeze=False)
    for row, (query, cands, answer) in enumerate(zip(queries, candidates, answers)):
        distances = dissimilarity(embeddings[cands], embeddings[query], head)
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
