"""The optimizer and learning-rate schedule a run trains with: Adam (AdamW with weight decay),
airbench's SGD, or airbench's Muon for convolutions; constant, warm-up + cosine, airbench's
triangular, or linear decay.

Keras has Adam, AdamW, Nesterov SGD, warm-up + cosine and linear decay (PolynomialDecay);
what it lacks is wrapped here, small and serialisable (model.keras keeps its optimizer, so
resume rebuilds the same one):
- `TriangularSchedule`: airbench's linear rise and fall (Keras' schedules warm up linearly
  only into a cosine, and PolynomialDecay has no warm-up).
- `NormBiasSGD`: SGD whose BatchNorm biases in layers without a scale step 64x further
  (airbench's "bias_scaler"). Such a bias is its layer's only trainable weight; at the rate
  the convolutions need it would barely move. Weight decay stays 1x for it, as in airbench.
- `MuonSGD`: NormBiasSGD whose convolution kernels step by airbench94_muon's Muon instead.
  Keras' own `Muon` orthogonalises 2-D weights only and sends everything else, convolution
  kernels included, to AdamW; airbench's flattens each kernel to a matrix.
"""

import keras

SGD_MOMENTUM = 0.85  # airbench's Nesterov momentum
NORM_BIAS_RATE_SCALE = 64.0  # airbench's bias_scaler
MUON_MOMENTUM = 0.6  # airbench94_muon's, Nesterov
MUON_NS_STEPS = 3  # Newton-Schulz iterations (airbench94_muon's)
# airbench94_muon steps its filters at 0.24 where its other weights step at 1.65 in Keras'
# mean-loss units (0.053 per example of its batches of 2000 summed, x 2000 / 64 for the biases)
MUON_RATE_RATIO = 0.24 / 1.65


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

    @staticmethod
    def indices_of(variables, paths):
        """Indices of the `variables` whose path is in `paths`. update_step gets the backend's
        variable (a tf.Variable has no Keras path): match by index, as Keras' own optimizers
        find their slots."""
        return {index for index, variable in enumerate(variables) if variable.path in paths}

    def build(self, variables):
        super().build(variables)
        self._scaled_indices = self.indices_of(variables, self.scaled_paths)

    def update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in self._scaled_indices:
            learning_rate = keras.ops.multiply(learning_rate, self.scale)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "scaled_paths": list(self.scaled_paths),
                "scale": self.scale}


def orthogonalize(matrix, steps=MUON_NS_STEPS):
    """Muon's quintic Newton-Schulz iteration: roughly U V^T for matrix = U S V^T (singular
    values land in about 0.5..1.5, which trains as well as exactly 1; Keras' Muon has the same
    coefficients as a method of its 2-D-only optimizer)."""
    ops = keras.ops
    a, b, c = 3.4445, -4.7750, 2.0315
    wide = matrix.shape[0] <= matrix.shape[1]
    x = matrix if wide else ops.transpose(matrix)
    x = x / (ops.norm(x) + 1e-7)  # the top singular value <= 1
    for _ in range(steps):
        gram = ops.matmul(x, ops.transpose(x))
        x = a * x + ops.matmul(b * gram + c * ops.matmul(gram, gram), x)
    return x if wide else ops.transpose(x)


@keras.saving.register_keras_serializable(package="catsdogs")
class MuonSGD(NormBiasSGD):
    """NormBiasSGD, but the variables in `muon_paths` (convolution kernels, whose BatchNorm makes
    their scale irrelevant) take airbench94_muon's step: each kernel is rescaled to norm
    sqrt(output channels), then moves `muon_ratio` x the learning rate along the orthogonalised
    Nesterov momentum of its gradient, flattened to (kernel x inputs, outputs). Every filter
    direction moves at the same speed, whatever its gradient's size; airbench reaches 94 % in
    8 epochs with it where its SGD takes 9.9 (cifar10-airbench, airbench94_muon.py).
    Weight decay, applied before the step, is undone by the renormalisation: it spares them."""

    def __init__(self, learning_rate, muon_paths=(), muon_ratio=MUON_RATE_RATIO,
                 muon_momentum=MUON_MOMENTUM, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.muon_paths, self.muon_ratio = tuple(muon_paths), muon_ratio
        self.muon_momentum = muon_momentum

    def build(self, variables):
        super().build(variables)
        self._muon_indices = self.indices_of(variables, self.muon_paths)

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        if index not in self._muon_indices:
            return super().update_step(gradient, variable, learning_rate)
        ops = keras.ops
        buffer = self.momentums[index]
        self.assign(buffer, ops.add(ops.multiply(buffer, self.muon_momentum), gradient))
        direction = ops.add(gradient, ops.multiply(buffer, self.muon_momentum))  # Nesterov
        outputs = variable.shape[-1]
        norm = ops.sqrt(ops.sum(ops.square(variable)))  # ops.norm takes at most 2-D
        self.assign(variable, ops.multiply(variable, outputs ** 0.5 / norm))
        step = orthogonalize(ops.reshape(direction, (-1, outputs)))
        rate = ops.cast(learning_rate, variable.dtype) * self.muon_ratio
        self.assign_sub(variable, ops.multiply(ops.reshape(step, variable.shape), rate))

    def get_config(self):
        return {**super().get_config(), "muon_paths": list(self.muon_paths),
                "muon_ratio": self.muon_ratio, "muon_momentum": self.muon_momentum}


def convolution_kernels(model):
    """Paths of the trainable convolution kernels (4-D weights): what MuonSGD orthogonalises."""
    return sorted(variable.path for variable in model.trainable_variables
                  if len(variable.shape) == 4)


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
    if name == "linear":  # airbench94_muon's: straight down to 0 at the last step
        return keras.optimizers.schedules.PolynomialDecay(peak, total_steps, 0.0, power=1.0)
    return peak


def make_optimizer(config, steps_per_epoch, model, replicas=1):
    """The optimizer `config` names at its scheduled rate, scaled by the replica count (linear
    scaling rule, see distribute.py). Weight decay is decoupled as in Keras (each step shrinks
    weights by it x the learning rate): AdamW for Adam, SGD's own for SGD."""
    rate = make_schedule(config.schedule, config.learning_rate * replicas,
                         steps_per_epoch * config.epochs)
    ema = dict(use_ema=True, ema_momentum=config.ema) if config.ema else {}
    if config.optimizer in ("sgd", "muon"):
        sgd = dict(scaled_paths=norm_biases_without_scale(model), momentum=SGD_MOMENTUM,
                   nesterov=True, weight_decay=config.weight_decay or None)
        if config.optimizer == "muon":
            return MuonSGD(rate, muon_paths=convolution_kernels(model), **sgd, **ema)
        return NormBiasSGD(rate, **sgd, **ema)
    if config.weight_decay:
        return keras.optimizers.AdamW(rate, weight_decay=config.weight_decay, **ema)
    return keras.optimizers.Adam(rate, **ema)
