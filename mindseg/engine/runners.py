"""Trained models at inference, called with numpy: ``runner(image, image_size)`` returns
``{output name: numpy array}`` for the model's ``output_names`` (docs/contracts.md), whether the
model is a network (:class:`NetworkRunner`) or a graph export.py wrote (:class:`ExportedModel`);
:func:`run_batched` feeds either a list of images."""
import os

import numpy as np

from mindseg.engine.exporter import FILE_FORMATS, ExportError, export_paths, load_export_spec


def release_freed_heap():
    """Hand the heap memory that glibc keeps after ``free`` back to the system (``malloc_trim``);
    a no-op where the C library has no such call. Returns whether it ran (not whether there was
    memory to hand back)."""
    import ctypes
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols, libc among them
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


def compile_network(net, *inputs):
    """Compile ``net`` for ``inputs`` (GRAPH mode; PYNATIVE has nothing to compile) and give
    the memory the compiler freed back before the first run.

    Graph compilation of a detector frees hundreds of MB that glibc keeps for later ``malloc``s,
    while the graph's run draws from MindSpore's own memory pool: without the release the two
    add up (Mask R-CNN R50-FPN at 800x1216 on the CPU: the release takes 8% off the peak RSS;
    ``scripts/benchmark.py --task infer``).
    """
    import mindspore as ms
    if ms.get_context("mode") != ms.GRAPH_MODE:
        return False
    net.compile(*inputs)
    release_freed_heap()
    return True


class NetworkRunner:
    """A MindSpore network at inference, called with numpy: ``runner(image, image_size)``
    returns ``{output name: numpy array}`` for the network's ``output_names``."""

    def __init__(self, net):
        from mindseg.models.outputs import check_output_names
        self.net = net
        self.net.set_train(False)
        self.batch_size = None  # any
        self.output_names = check_output_names(net.output_names, f"{type(net).__name__}.output_names")
        self.mask_threshold = float(net.mask_threshold)
        self._compiled = False

    def __call__(self, image, image_size):
        import mindspore as ms
        from mindseg.models.outputs import named_outputs
        inputs = (ms.Tensor(np.asarray(image, np.float32)), ms.Tensor(np.asarray(image_size, np.float32)))
        if not self._compiled:
            compile_network(self.net, *inputs)
            self._compiled = True
        outputs = self.net(*inputs)
        return named_outputs(self.output_names, (o.asnumpy() for o in outputs))


class ExportedModel:
    """An exported MINDIR graph and its description, callable like the network at inference:
    ``model(image, image_size) -> {output name: numpy array}``; ``output_names`` and
    ``mask_threshold`` as the JSON gives them."""

    def __init__(self, graph_path):
        import mindspore as ms
        from mindspore import nn
        if not os.path.isfile(graph_path):
            raise FileNotFoundError(f"exported graph not found: {graph_path}")
        if not graph_path.lower().endswith(FILE_FORMATS["MINDIR"]):
            raise ValueError(f"{graph_path}: only MINDIR graphs can be run here (AIR runs on Ascend "
                             f"through ACL)")
        json_path = export_paths(graph_path, "MINDIR")[1]
        if not os.path.isfile(json_path):
            raise FileNotFoundError(f"{graph_path}: its description {json_path} is missing "
                                    f"(export.py writes the two side by side)")
        self.spec = load_export_spec(json_path)
        try:
            self.graph = nn.GraphCell(ms.load(graph_path))
        except (RuntimeError, ValueError) as err:
            raise ExportError(f"{graph_path}: MindSpore cannot load it as a MINDIR graph "
                              f"({str(err).strip().splitlines()[0]})") from None
        self.batch_size = int(self.spec["inputs"][0]["shape"][0])
        self.output_names = tuple(o["name"] for o in self.spec["outputs"])
        self.mask_threshold = float(self.spec["postprocess"]["mask_threshold"])

    def __call__(self, image, image_size):
        import mindspore as ms
        from mindseg.models.outputs import named_outputs
        outputs = self.graph(ms.Tensor(np.asarray(image, np.float32)),
                             ms.Tensor(np.asarray(image_size, np.float32)))
        return named_outputs(self.output_names, (o.asnumpy() for o in outputs))


def run_batched(runner, images, sizes, batch_size):
    """Run ``runner`` over stacked images in batches of ``batch_size`` (a fixed-batch graph gets
    its last batch padded with copies of the first image); returns ``{output name: array over
    the images}``."""
    count = len(images)
    step = batch_size or count
    per_output = None
    for start in range(0, count, step):
        image = np.stack(images[start:start + step])
        size = np.stack(sizes[start:start + step])
        real = len(image)
        if batch_size and real < batch_size:
            pad = batch_size - real
            image = np.concatenate([image, np.repeat(image[:1], pad, 0)])
            size = np.concatenate([size, np.repeat(size[:1], pad, 0)])
        outputs = {name: value[:real] for name, value in runner(image, size).items()}
        per_output = outputs if per_output is None else \
            {name: np.concatenate([per_output[name], value]) for name, value in outputs.items()}
    return per_output
