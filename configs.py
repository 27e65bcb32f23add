"""Everything a run needs, as plain module globals.

Edit the values below, or override any of them on the command line:

    python train.py --dataset=att_faces --data_dir=data/att_faces --epochs=5

Order of precedence: the globals below, then the preset of the chosen `dataset`
(see PRESETS), then explicit `--key=value` overrides. To change a preset's value
for good, edit its entry in PRESETS.
"""
import os

_OMNIGLOT_MINI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "datasets",
                              "omniglot_mini")

# --- data -----------------------------------------------------------------------
dataset = "omniglot_mini"  # the preset to start from (PRESETS in configs.py);
#                           omniglot_mini, the shipped mini Omniglot, needs no download
data_dir = ""  # class-folder tree (a class = a folder that directly holds images)
image_size = None  # (height, width) to resize every image to; None keeps the files' size
downsample = 1  # keep every n-th pixel after resizing (the AT&T faces tutorial's `size = 2`)
channels = 1  # 1 = greyscale, 3 = RGB
max_images_per_class = 0  # 0 = all; Fruits-360 uses 10 images per class
strict = False  # stop at an unreadable or non-image file instead of skipping it
image_cache = True  # decode a folder's images once into cache_dir, where later runs and
#                    evaluate.py read them batch by batch (a folder larger than
#                    memory trains too). False = decode into memory on every run
#                    (a folder that cannot fit is refused)
cache_dir = ""  # where image_cache keeps decoded images; "" = ~/.cache/siamese/images
#                ($XDG_CACHE_HOME/siamese/images)

# --- pairs and split --------------------------------------------------------------
total_sample_size = 10000  # that many genuine AND that many impostor pairs (20,000 in all)
split = "classes"  # "classes": train/val/test classes disjoint (one-shot on unseen classes)
#                    "groups": whole parent folders disjoint (Omniglot: by alphabet)
#                    "pairs": the AT&T tutorial's random split of the pairs (classes shared)
test_fraction = 0.25  # of the classes (split="classes") or of the pairs (split="pairs")
val_fraction = 0.25  # of what remains after the test part, like Keras' validation_split

augment = False  # Koch's affine distortions on the fly (rotation, shear, scale, shift)
flip = False  # with augment: random left-right mirroring too (faces yes, characters no)
erase = False  # with augment: random erasing too, a noise rectangle of 2-33% of the
#               image with probability 0.5 (Zhong et al. 2020; occlusions, faces)
class_rotations = False  # pairing="batch": each training class turned by 90, 180 and
#                          270 degrees counts as 3 more classes (the Omniglot practice
#                          of Santoro et al. 2016, Vinyals et al. 2016); square images

# --- model ----------------------------------------------------------------------
architecture = "att_faces"  # a base network of backbones.BACKBONES: a conv stack, or
#                             a keras.applications model (mobilenet_v3_small,
#                             efficientnet_b0, resnet50) for photos of 32x32 and up
backbone_weights = ""  # keras.applications models: "" = a random start, "imagenet" =
#                       ImageNet's weights (downloaded once), or the path of a weights
#                       file of the model without its classifier
freeze_below = ""  # keras.applications models: the layers before this one keep their
#                   weights (keras.io's example: "conv5_block1_out" of resnet50);
#                   "" = every layer trains
conv_dropout = None  # dropout rate after each conv block (0 to 1); None = the
#                     architecture's own (its entry in ARCHITECTURES)
projection_head = False  # pairing="batch": the architecture's embedding layer becomes a
#                          head the loss trains through and the saved network leaves
#                          out; images are compared by the features under it, which can
#                          carry over to unseen classes better (SimCLR, SupCon)
distance = "euclidean"  # output: Euclidean distance between the two embeddings
#                         "l1_sigmoid": Koch's p(same) = sigmoid(alpha . |a - b| + bias)
loss = "contrastive"  # y*d^2 + (1-y)*max(margin-d, 0)^2, y = 1 for a genuine pair
#                       "bce": binary cross-entropy on p(same) (with l1_sigmoid)
#                       "triplet": FaceNet's max(d(a,p) - d(a,n) + triplet_margin, 0)
#                       "supcon": supervised contrastive, a softmax over the batch that
#                       asks each image to pick out its own class (Khosla et al. 2020)
#                       "normsoftmax": cross-entropy over cosine similarities to one
#                       learned vector per training class (Zhai & Wu 2019)
#                       "prototypical": each class's first prototype_shots images in
#                       a P x K batch make its prototype (their mean); the others
#                       pick theirs by a softmax over squared distances (Snell 2017)
margin = 1.0  # contrastive margin; pairs with d < margin/2 count as "same"
normalize = False  # L2-normalise embeddings (always on with triplet, supcon, normsoftmax)
triplet_margin = 0.2  # FaceNet's alpha, for unit-length embeddings
temperature = 0.1  # softmax temperature of supcon and normsoftmax (on cosines)
soft_margin = False  # triplet: softplus(d(a,p) - d(a,n)) instead of the hinge with
#                     triplet_margin, which is 0 once every triplet clears the margin,
#                     so learning stops; softplus keeps pulling (Hermans et al. 2017)
prototype_shots = 1  # prototypical: support images per class in a batch (1 = one-shot)
mining = "semi_hard"  # triplets mined in each batch: semi_hard | hard | all
pairing = "pairs"  # "pairs": the write-ups' way, each step embeds batch_size pairs
#                    "batch": each step embeds batch_size images, P classes x K images,
#                    and scores all their pairs (needed by triplet and supcon)
images_per_class = 4  # K of the P x K batches (pairing="batch")
batch_groups = 0  # > 0: each P x K batch draws its classes from this many parent
#                   folders (Omniglot alphabets), so its impostors look alike; 0 = any

# --- optimisation -----------------------------------------------------------------
optimizer = "rmsprop"  # rmsprop | adam | sgd
learning_rate = 0.001  # step size of the optimizer
weight_decay = 0.0  # decoupled weight decay (Loshchilov & Hutter 2019, AdamW): each step
#                    shrinks every kernel by learning_rate x weight_decay of itself;
#                    biases and batch-norm scales and offsets are left alone; 0 = off
epochs = 13  # most passes over the training data; early stopping may end sooner
batch_size = 128  # pairs per step (pairing="pairs"), or images per P x K batch
patience = 5  # early stopping after this many epochs without progress; 0 = off
lr_schedule = "constant"  # constant | cosine (falls to 0 by the last epoch)
reduce_lr_patience = 0  # halve the learning rate after this many epochs without
#                        progress; 0 = a constant learning rate
monitor = "val_loss"  # what "progress" and the kept checkpoint mean: val_loss, or
#                       val_oneshot (N-way one-shot accuracy on the validation classes)
refit = False  # once validation has chosen the epoch count, train a fresh network on
#               the training and validation classes together for that many epochs and
#               keep it (the "trainval" practice of few-shot papers, e.g. Lee et al.
#               2019); the test classes stay unseen; the threshold is the one
#               calibrated on the validation pairs before they joined training
seed = 1337  # one seed drives the split, the pairs, shuffling and initialisation
distribute = "none"  # none | mirrored (all local GPUs) | multi_worker (hosts in TF_CONFIG)
jit_compile = False  # XLA; measured slower on 2-core CPUs (benchmarks/pipeline.py)

# --- evaluation (evaluate.py; train.py reports the same at the end) ----------------
ways = 0  # N-way one-shot: 0 = 20 where the test split has >= 20 classes, else all
trials = 400  # one-shot tasks, drawn with `seed`
within_group = False  # draw each task's classes from one parent folder (Omniglot alphabet)
lake_runs = ""  # Lake et al.'s all_runs folder: their 20 official runs of 20-way
#                within-alphabet one-shot on Omniglot's evaluation alphabets, scored
#                after training (and by evaluate.py --lake_runs=DIR); "" = none

# --- output -----------------------------------------------------------------------
out_dir = "runs"  # every run gets a new folder inside: nothing is overwritten
resume = ""  # a run folder to continue (after Ctrl-C or a crash), with its own config

# Named recipes: each sets the values a dataset needs; `dataset` selects one.
PRESETS = {
    # The offline default: the mini Omniglot shipped in datasets/omniglot_mini (the
    # background set's 30 alphabets at 28x28). Koch's task in about 3 minutes on 2 CPU
    # cores: learn on 19 alphabets, choose the epoch by 20-way one-shot within 5
    # validation alphabets, test within 6 alphabets never seen, and on Lake et al.'s
    # 20 official runs (evaluation alphabets) at the same size.
    "omniglot_mini": dict(
        data_dir="", architecture="omniglot", channels=1, image_size=None,
        downsample=1, split="groups", total_sample_size=10000, test_fraction=0.2,
        val_fraction=0.2, ways=20, within_group=True, pairing="batch", loss="triplet",
        mining="semi_hard", triplet_margin=0.4, images_per_class=4, batch_size=128,
        augment=False, class_rotations=True, optimizer="adam", learning_rate=0.002,
        epochs=8, lr_schedule="cosine", patience=0, monitor="val_oneshot",
        lake_runs=os.path.join(_OMNIGLOT_MINI, "all_runs"),
    ),
    # scikit-learn's bundled 8x8 handwritten digits: runs offline in about a minute.
    "digits": dict(
        architecture="digits", channels=1, image_size=None, downsample=1,
        total_sample_size=5000, test_fraction=0.3, val_fraction=0.3,
        optimizer="adam", learning_rate=0.001, epochs=15, batch_size=128, patience=5,
    ),
    # The AT&T faces tutorial as written: AT&T/ORL faces s1..s40 (92x112 PGM), every 2nd pixel ->
    # 56x46, conv 6 -> 12, Dense 128 -> 50, RMSprop, batch 128, 10,000 + 10,000 pairs,
    # 13 epochs, and its protocol: a random split of the pairs (all 40 people shared).
    "att_faces": dict(
        data_dir="data/att_faces", architecture="att_faces", channels=1,
        image_size=None, downsample=2, total_sample_size=10000, split="pairs",
        test_fraction=0.25, val_fraction=0.25, optimizer="rmsprop",
        learning_rate=0.001, epochs=13, batch_size=128, patience=5,
    ),
    # AT&T faces for people never seen in training (one-shot): the tutorial's data, a
    # BatchNorm CNN with dropout 0.25 after each block, FaceNet's triplet loss in P x K
    # batches (up to 32 people x 4 photos: all 22 training people of AT&T), each photo
    # with its farthest genuine and closest impostor photo ("batch hard") and a soft
    # margin (Hermans et al. 2017), through a projection head, faces compared by the
    # conv features under it; Koch's distortions plus mirroring; the epoch kept is the
    # best on validation-people one-shot accuracy.
    # (The tutorial's recipe loses to nearest neighbour on raw pixels for unseen people.)
    "att_faces_oneshot": dict(
        data_dir="data/att_faces", architecture="faces", channels=1,
        image_size=None, downsample=2, total_sample_size=10000, split="classes",
        test_fraction=0.25, val_fraction=0.25, pairing="batch", loss="triplet",
        mining="hard", soft_margin=True, images_per_class=4, batch_size=128,
        augment=True, flip=True, projection_head=True, optimizer="adam",
        learning_rate=0.001, epochs=40, patience=10, monitor="val_oneshot",
    ),
    # The same 40 people, fetched (once) by scikit-learn as 64x64 images.
    "olivetti": dict(
        data_dir="", architecture="att_faces", channels=1, image_size=None,
        downsample=1, total_sample_size=10000, split="pairs", test_fraction=0.25,
        val_fraction=0.25, optimizer="rmsprop", learning_rate=0.001, epochs=13,
        batch_size=128, patience=5,
    ),
    # The PlantVillage project: class folders, 224 -> 112 px grey, conv 16-32-16,
    # Dense 128 -> 50, RMSprop, batch 256, 20 epochs, early stopping patience 3.
    "plantvillage": dict(
        data_dir="data/PlantVillage", architecture="plantvillage", channels=1,
        image_size=(224, 224), downsample=2, total_sample_size=10000,
        test_fraction=0.15, val_fraction=0.2, optimizer="rmsprop",
        learning_rate=0.001, epochs=20, batch_size=256, patience=3,
    ),
    # The Fruits-360 walkthrough: the Training folder, 100x100 RGB, 10 images per class,
    # four conv layers, Adam.
    "fruits360": dict(
        data_dir="data/fruits-360/Training", architecture="fruits360", channels=3,
        image_size=(100, 100), downsample=1, max_images_per_class=10,
        total_sample_size=10000, test_fraction=0.2, val_fraction=0.2,
        optimizer="adam", learning_rate=0.00006, epochs=30, batch_size=64, patience=5,
    ),
    # keras.io's siamese contrastive example: MNIST 28x28, fetched once by Keras.
    "mnist": dict(
        data_dir="", architecture="mnist", channels=1, image_size=None, downsample=1,
        total_sample_size=30000, test_fraction=0.2, val_fraction=0.2,
        optimizer="rmsprop", learning_rate=0.001, epochs=10, batch_size=16, patience=3,
    ),
    # Koch et al. 2015's protocol on Omniglot alphabet/character folders (105x105
    # drawings, here at 52x52 for the CPU): learn on the background set's alphabets but
    # 5, choose the epoch by 20-way one-shot within those 5 validation alphabets, and
    # test on alphabets never seen: Lake et al.'s 20 official runs
    # (evaluate.py --lake_runs=DIR) or the evaluation set (--data_dir=DIR).
    # Koch's affine distortions, triplet loss in P x K batches (32 characters x 4
    # drawings; margin 0.4, as distances on unit vectors run 0-2), each training
    # character also turned by 90, 180 and 270 degrees as new characters.
    "omniglot": dict(
        data_dir="data/omniglot/images_background", architecture="omniglot",
        channels=1, image_size=(52, 52), downsample=1, split="groups",
        total_sample_size=10000, test_fraction=0.0, val_fraction=0.17, ways=20,
        within_group=True, pairing="batch", loss="triplet", mining="semi_hard",
        triplet_margin=0.4, images_per_class=4, batch_size=128, augment=True, flip=False,
        class_rotations=True, optimizer="adam", learning_rate=0.002, epochs=30,
        lr_schedule="cosine", patience=0, monitor="val_oneshot",
    ),
    # Any class-folder tree of your own: point data_dir at it. The compact base at
    # 64x64 RGB; triplet loss in P x K batches (batch-hard, soft margin) with Koch's
    # distortions, the epoch kept by one-shot accuracy on the validation classes. Chosen
    # over contrastive pairs on the validation classes of AT&T faces and Omniglot's
    # background set together (docs/evaluation.md, How presets are chosen).
    "folder": dict(
        data_dir="", architecture="compact", channels=3, image_size=(64, 64),
        downsample=1, total_sample_size=10000, test_fraction=0.2, val_fraction=0.2,
        pairing="batch", loss="triplet", mining="hard", soft_margin=True,
        images_per_class=4, augment=True, monitor="val_oneshot",
        optimizer="adam", learning_rate=0.001, epochs=40, batch_size=128, patience=10,
    ),
}
