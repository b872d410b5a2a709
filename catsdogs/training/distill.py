"""Knowledge distillation (Hinton et al. 2015) with Keras' own `keras.distillation.Distiller`:
a student learns from a finished run's model (the teacher) as well as from the labels (the
library of `catsdogs distill`, and of `catsdogs prune --distill`).

A run whose config names a `teacher` fits a Distiller that holds the frozen teacher and the
student. Each step, both see the same augmented batch; the loss is

    (1 - alpha) x the labels' cross-entropy + alpha x T^2 x KL(teacher_T || student_T)

where X_T is softmax(logits / T). Only the student is kept (`student_of`): model.keras is a
plain Functional model, so predict, evaluate, export and safe-mode loading see a normal run.

What Keras' LogitsDistillation needs, and how catsdogs meets it:
- Logits. Our models output probabilities (presets.py). log p is a logit vector of p (softmax
  ignores the constant it lacks), and one sigmoid unit p is the two-class softmax of
  (log(1 - p), log p): so both heads go through LogitsDistillation's one softmax path. (One
  column softmaxed alone would always be 1: no loss at all.) For the sigmoid that KL equals
  the binary cross-entropy between the tempered sigmoids minus the teacher's entropy, a
  constant for the student: the same gradients, and 0 when the student matches.
  `probability_logits` clips p at Keras' epsilon first, as Keras' cross-entropy on
  probabilities does.
- A `keras.losses.KLDivergence()` instance. Its default, the string "kl_divergence", resolves
  to the plain function, which LogitsDistillation does not recognise: it would compare the
  tempered logits themselves, with no softmax and no T^2 scaling.
- One input shape. The teacher may be any run, of another image size: it sits behind a
  Resizing layer, so it sees the student's augmented batch resized to its size (upscaled when
  the student's images are smaller: less detail than the teacher trained on).
- A built model: Keras' BackupAndRestore restores into built models only (resume).
"""

from pathlib import Path

import keras

from catsdogs.errors import CatsDogsError


def probability_logits(probabilities):
    """Logits whose softmax is `probabilities` (n, classes); for one sigmoid column p, the two
    logits (log(1 - p), log p) of the classes (0, 1)."""
    epsilon = keras.config.epsilon()
    if probabilities.shape[-1] == 1:
        p = keras.ops.clip(probabilities, epsilon, 1.0 - epsilon)
        return keras.ops.concatenate([keras.ops.log(1.0 - p), keras.ops.log(p)], axis=-1)
    return keras.ops.log(keras.ops.clip(probabilities, epsilon, 1.0))


class ProbabilityDistillation(keras.distillation.LogitsDistillation):
    """LogitsDistillation for models that output probabilities (a softmax, or one sigmoid
    unit): T^2 x KL(softmax(teacher logits / T) || softmax(student logits / T)), the mean over
    the batch, with the logits from `probability_logits`.

    Args:
        temperature: divides both models' logits; higher gives softer targets (> 0).

    Example:
        >>> loss = ProbabilityDistillation(temperature=4.0)  # doctest: +SKIP
        >>> loss.compute_loss(teacher_probabilities, student_probabilities)  # doctest: +SKIP
    """

    def __init__(self, temperature=3.0):
        # an instance, not "kl_divergence": see the module docstring
        super().__init__(temperature=temperature, loss=keras.losses.KLDivergence())

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return super().compute_loss(probability_logits(teacher_outputs),
                                    probability_logits(student_outputs), **kwargs)


def load_run_model(run_dir, class_names, role):
    """The Classifier of run folder `run_dir` (loaded safely), checked to classify
    `class_names` in the same order."""
    from catsdogs.inference.classifier import load

    if not Path(run_dir).is_dir():
        raise CatsDogsError(f"{role} is not there", where=run_dir,
                            fix="restore the run folder, or start a new run")
    classifier = load(run_dir)
    if classifier.class_names != list(class_names):
        raise CatsDogsError(f"{role} classifies {classifier.class_names}, the data has "
                            f"{list(class_names)}", where=run_dir,
                            fix="use the data that run was trained on (the same class folders)")
    return classifier


def teacher_model(run_dir, class_names):
    """The teacher run's model behind a Resizing to its own input size: it takes the student's
    batches of any size."""
    teacher = load_run_model(run_dir, class_names, "the teacher run")
    pixels = keras.Input((None, None, 3), name="pixels")
    resized = keras.layers.Resizing(*teacher.image_size, antialias=True,
                                    name="to_teacher_size")(pixels)
    return keras.Model(pixels, teacher.model(resized), name="teacher")


def make_distiller(student, config, class_names):
    """`student` inside a built keras.distillation.Distiller with the teacher of `config`
    (`teacher`, `distill_temperature`, `distill_alpha`); compile and fit it as the student."""
    distiller = keras.distillation.Distiller(
        teacher_model(config.teacher, class_names), student,
        ProbabilityDistillation(config.distill_temperature),
        student_loss_weight=1.0 - config.distill_alpha)
    distiller.build(student.input_shape)
    return distiller


def student_of(model):
    """The model a run keeps: a Distiller's student, or the model itself."""
    return model.student if isinstance(model, keras.distillation.Distiller) else model
