"""What a model may run: the operations a classifier needs, checked before the model loads.

A SavedModel is a TensorFlow program, not data: its graph may hold any of TensorFlow's
operations (WriteFile, ReadFile, MatchingFiles, PrintV2 to a file, ...), and they run when the
model is loaded or called. `.tflite` files may hold Flex ops (any TensorFlow op, run by the
TensorFlow the interpreter finds) and custom ops, `.onnx` files operators of other domains.
So these are read first, as data (TensorFlow's and ONNX's protobufs, the TFLite flatbuffer
schema), and refused unless every operation is one a classifier needs; `--trust-model` (the
`trust_model` argument of `load`) skips the check, for models one would run as a program.

CLASSIFIER_OPS are the op types found in the SavedModels that catsdogs' writer
(saved_model.py) and Keras' `model.export` produce for every preset, plus those of the other
standard Keras layers (normalisation, activations, pooling, resizing, attention); a test
rebuilds the presets' SavedModels and checks that they pass.
"""

from pathlib import Path

from catsdogs.errors import CatsDogsError

# found in the presets' SavedModels (both signatures: image bytes and pixels)
PRESET_OPS = frozenset("""
    Abs AddV2 All ArgMax Assert AssignVariableOp BiasAdd BitwiseAnd Cast ConcatV2 Const Conv2D
    DecodeImage DecodeJpeg DecodeRaw DepthwiseConv2dNative DisableCopyOnRead Equal ExpandDims ExtractJpegShape GatherV2
    Greater GreaterEqual Identity IdentityN If Less LessEqual LogicalAnd MatMul Max MaxPool
    Maximum Mean Mul NoOp Pack Pad Placeholder Pow Range ReadVariableOp RealDiv Relu Relu6
    Reshape ReverseV2 Rsqrt ScaleAndTranslate SelectV2 Shape Sigmoid Softmax Sqrt Square Squeeze
    StatefulPartitionedCall StatelessCase StatelessIf StridedSlice StringJoin StringLength Sub Substr Sum
    TensorListFromTensor TensorListGetItem TensorListReserve TensorListSetItem TensorListStack
    VarHandleOp VarIsInitializedOp While""".split())
# the margin: other standard Keras layers' ops (LayerNormalization's SquaredDifference,
# exact GELU's Erfc, ...); none touches files, processes or the network
KERAS_LAYER_OPS = frozenset("""
    ArgMin AvgPool AvgPool3D BatchMatMulV2 BroadcastTo Ceil ClipByValue Conv2DBackpropInput
    Conv3D Conv3DBackpropInputV2 Cos Cumsum DepthToSpace Einsum Elu EnsureShape Erf Erfc Exp
    ExtractImagePatches Fill Floor FloorDiv FloorMod FusedBatchNormV3 LeakyRelu Log
    LogSoftmax LogicalNot LogicalOr MaxPool3D MaxPoolV2 Min Minimum MirrorPad Neg NotEqual
    OnesLike PadV2 PartitionedCall Prod Reciprocal ResizeArea ResizeBicubic ResizeBilinear
    ResizeNearestNeighbor Round Select Selu Sign Sin Slice Softplus Softsign SpaceToDepth Split
    SplitV SquaredDifference StatelessWhile StopGradient Tanh Tile TopKV2 Transpose Unpack
    ZerosLike""".split())
CLASSIFIER_OPS = PRESET_OPS | KERAS_LAYER_OPS
# TensorFlow's own save and restore functions (named by the SavedModel's saver_def) write and
# read the variables' checkpoint; catsdogs never calls them, and nothing else may
SAVER_OPS = frozenset("MergeV2Checkpoints RestoreV2 SaveV2 ShardedFilename "
                      "StaticRegexFullMatch".split())
# ONNX operator domains onnxruntime implements itself ("" is the standard ai.onnx)
ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})

TRUST_FIX = ("load it with --trust-model only if you would run it as a program of its "
             "author's (docs/trust.md)")


def refuse_untrusted_ops(path):
    """CatsDogsError if the SavedModel folder, `.tflite` or `.onnx` file at `path` holds an
    operation outside what a classifier needs; other kinds are checked where they load
    (`.keras`: safe mode). Reads the model as data: nothing of it runs."""
    path = Path(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        kind, unknown = "SavedModel", saved_model_unknown_ops(path)
    elif path.suffix.lower() == ".tflite":
        kind, unknown = ".tflite model", tflite_custom_ops(path)
    elif path.suffix.lower() == ".onnx":
        kind, unknown = ".onnx model", onnx_foreign_ops(path)
    else:
        return
    if unknown:
        shown = ", ".join(sorted(unknown)[:8]) + (", ..." if len(unknown) > 8 else "")
        raise CatsDogsError(f"refused to load: the {kind} holds operations a classifier never "
                            f"needs ({shown}), which could read or write files or run code",
                            where=path, fix=TRUST_FIX)


def _function_references(node):
    """Names of the library functions a NodeDef calls (StatefulPartitionedCall's `f`, If's
    branches, While's cond and body)."""
    for value in node.attr.values():
        if value.HasField("func"):
            yield value.func.name
        yield from (function.name for function in value.list.func)


def saved_model_unknown_ops(folder):
    """Op types in saved_model.pb outside CLASSIFIER_OPS, in its graph and every function of
    its library; SAVER_OPS only inside the saver's own functions, and "calls the saver" where
    any other function reaches those."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString((Path(folder) / "saved_model.pb").read_bytes())
    except Exception as error:  # protobuf's DecodeError has no importable common base
        raise CatsDogsError(f"not a readable SavedModel ({type(error).__name__})",
                            where=folder) from None
    unknown = set()
    for graph in saved_model.meta_graphs:
        functions = {f.signature.name: f for f in graph.graph_def.library.function}
        saver = graph.saver_def
        saver_nodes = {name.split(":")[0] for name in (saver.save_tensor_name,
                                                       saver.restore_op_name) if name}
        saver_functions = _reachable(functions, [name for node in graph.graph_def.node
                                                 if node.name in saver_nodes
                                                 for name in _function_references(node)])
        for node in graph.graph_def.node:
            if node.name not in saver_nodes:
                unknown |= _unknown(node, saver_functions, CLASSIFIER_OPS)
        for name, function in functions.items():
            allowed = CLASSIFIER_OPS | SAVER_OPS if name in saver_functions else CLASSIFIER_OPS
            for node in function.node_def:
                unknown |= _unknown(node, saver_functions - {name}, allowed)
    return unknown


def _unknown(node, forbidden_calls, allowed):
    found = set() if node.op in allowed else {node.op}
    if any(name in forbidden_calls for name in _function_references(node)):
        found.add("calls the saver")
    return found


def _reachable(functions, roots):
    """The library functions `roots` call, directly or through others."""
    seen, pending = set(), list(roots)
    while pending:
        name = pending.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        pending.extend(reference for node in functions[name].node_def
                       for reference in _function_references(node))
    return seen


def tflite_custom_ops(path):
    """Custom and Flex operators of a .tflite file (builtin ones are LiteRT's own kernels),
    read from its flatbuffer with TensorFlow Lite's schema, before an interpreter exists."""
    from tensorflow.lite.python import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    except Exception as error:  # a flatbuffer that is not one fails anywhere inside
        raise CatsDogsError(f"not a readable .tflite model ({type(error).__name__})",
                            where=path) from None
    custom = schema.BuiltinOperator.CUSTOM
    return {(code.customCode or b"?").decode(errors="replace")
            for code in model.operatorCodes or []
            if custom in (code.builtinCode, code.deprecatedBuiltinCode)}


def onnx_foreign_ops(path):
    """Operators of an .onnx file outside ONNX_DOMAINS (custom operator libraries),
    `domain:op`, read with the onnx package's protobufs."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError has no importable common base
        raise CatsDogsError(f"not a readable .onnx model ({type(error).__name__})",
                            where=path) from None
    graphs, found = [model.graph, *model.functions], set()
    local = {f"{f.domain}:{f.name}" for f in model.functions}  # functions defined inside
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            name = f"{node.domain}:{node.op_type}"
            if node.domain not in ONNX_DOMAINS and name not in local:
                found.add(name)
            for attribute in node.attribute:  # If's branches, Loop's body: graphs inside
                graphs.extend([attribute.g] if attribute.HasField("g") else attribute.graphs)
    return found
