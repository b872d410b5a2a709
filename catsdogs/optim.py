"""The optimizer and learning-rate schedule a run trains with: Adam (AdamW with weight decay),
or airbench's SGD; constant, warm-up + cosine, or airbench's triangular schedule.

Keras has Adam, AdamW, Nesterov SGD and warm-up + cosine decay; what it lacks is wrapped here,
small and serialisable (model.keras keeps its optimizer, so resume rebuilds the same one):
- `TriangularSchedule`: airbench's linear rise and fall (Keras' schedules warm up linearly
  only into a cosine, and PolynomialDecay has no warm-up).
- `NormBiasSGD`: SGD whose BatchNorm biases in layers without a scale step 64x further
  (airbench's "bias_scaler"). Such a bias is its layer's only trainable weight; at the rate
  the convolutions need it would barely move. Weight decay stays 1x for it, as in airbench.
"""

import keras

SGD_MOMENTUM = 0.85  # airbench's Nesterov momentum
NORM_BIAS_RATE_SCALE = 64.0  # airbench's bias_scaler


@keras.saving.register_keras_serializable(package="catsdogs")
class TriangularSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """airbench's schedule: linear from `start` x peak up to the peak at `rise` of the steps,
    then linear down to `end` x peak at the last step (not to 0: lookahead averages the end)."""

    def __init__(self, peak, total_steps, rise=0.23, start=0.2, end=0.07):
        self.peak, self.total_steps = peak, total_steps
        self.rise, self.start, self.end = rise, start, end

    def __call__(self, step):
        progress = keras.ops.minimum(keras.ops.cast(step, "float32") / self.total_steps, 1.0)
        up = self.start + (1 - self.start) * progress / self.rise
        down = 1 - (1 - self.end) * (progress - self.rise) / (1 - self.rise)
        return self.peak * keras.ops.where(progress < self.rise, up, down)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "rise": self.rise,
                "start": self.start, "end": self.end}


@keras.saving.register_keras_serializable(package="catsdogs")
class NormBiasSGD(keras.optimizers.SGD):
    """Keras' SGD, but the variables named in `scaled_paths` step `scale` times further."""

    def __init__(self, learning_rate, scaled_paths=(), scale=NORM_BIAS_RATE_SCALE, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.scaled_paths, self.scale = tuple(scaled_paths), scale

    def build(self, variables):
        super().build(variables)
        # update_step gets the backend's variable (a tf.Variable has no Keras path): match
        # by index, as Keras' own optimizers find their slots
        self._scaled_indices = {index for index, variable in enumerate(variables)
                                if variable.path in self.scaled_paths}

    def update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in self._scaled_indices:
            learning_rate = keras.ops.multiply(learning_rate, self.scale)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "scaled_paths": list(self.scaled_paths),
                "scale": self.scale}


def norm_biases_without_scale(model):
    """Paths of the BatchNorm shifts (beta) whose layer has no scale (gamma)."""
    paths = {variable.path for variable in model.trainable_variables}
    return sorted(path for path in paths if path.endswith("/beta")
                  and path.removesuffix("beta") + "gamma" not in paths)


def make_schedule(name, peak, total_steps):
    """The learning rate over `total_steps` optimizer steps for schedule `name`; the steps are
    the optimizer's, which resume restores, so a resumed run continues on the same curve."""
    total_steps = max(2, total_steps)
    if name == "cosine":  # warm-up for 1/10 of the steps, then cosine decay to 0
        warmup = max(1, total_steps // 10)
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=total_steps - warmup, warmup_target=peak, warmup_steps=warmup)
    if name == "triangular":
        return TriangularSchedule(peak, total_steps)
    return peak


def make_optimizer(config, steps_per_epoch, model, replicas=1):
    """The optimizer `config` names at its scheduled rate, scaled by the replica count (linear
    scaling rule, see distribute.py). Weight decay is decoupled as in Keras (each step shrinks
    weights by it x the learning rate): AdamW for Adam, SGD's own for SGD."""
    rate = make_schedule(config.schedule, config.learning_rate * replicas,
                         steps_per_epoch * config.epochs)
    if config.optimizer == "sgd":
        return NormBiasSGD(rate, scaled_paths=norm_biases_without_scale(model),
                           momentum=SGD_MOMENTUM, nesterov=True,
                           weight_decay=config.weight_decay or None)
    if config.weight_decay:
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(rate)


class Lookahead(keras.callbacks.Callback):
    """airbench's lookahead: every `every` steps the weights (BatchNorm statistics too) move to
    a running average of themselves, whose weight grows as progress^3 up to `decay`: free to
    move early, averaged late. The last step of each epoch takes the average, so validation,
    model.keras and the resume backup all see it (airbench's epochs end the same way).

    Progress is the optimizer's step count, which resume restores; the average restarts from
    the restored weights (themselves an epoch-end average).
    """

    def __init__(self, steps_per_epoch, epochs, every=5, decay=0.95 ** 5):
        super().__init__()
        self.steps_per_epoch, self.total_steps = steps_per_epoch, max(1, steps_per_epoch * epochs)
        self.every, self.decay = every, decay
        self.averaged, self.average, self.last_step = None, None, 0

    def on_train_batch_end(self, batch, logs=None):
        if self.average is None:  # now, not at train begin: after a resume's restore
            self.averaged = [w for w in self.model.weights if "float" in str(w.dtype)]
            self.average = [keras.ops.convert_to_numpy(w) for w in self.averaged]
        weights = self.averaged
        step = int(self.model.optimizer.iterations)
        if step - self.last_step >= self.every:
            self.last_step = step
            weight = self.decay * min(1.0, step / self.total_steps) ** 3
            for i, variable in enumerate(weights):
                self.average[i] = (weight * self.average[i]
                                   + (1 - weight) * keras.ops.convert_to_numpy(variable))
                variable.assign(self.average[i])
        if batch + 1 >= self.steps_per_epoch:
            for variable, average in zip(weights, self.average):
                variable.assign(average)
