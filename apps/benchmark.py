"""Complexity of the paper's models beside the paper's figures (image models, then Table 3's
speech models), and the CPU speed of ResNet-50 against bL-ResNet-50 measured in one run.

    python -m apps.benchmark                      # everything (a few minutes on 2 cores)
    python -m apps.benchmark --nospeed            # complexity tables only
    python -m apps.benchmark --nocomplexity --nospeed   # speech complexity table only
    python -m apps.benchmark --runtimes=tflite --repeats=20
    python -m apps.benchmark --nocomplexity --nospeech --nospeed   # seed 002's Tables 1 and 4
    python -m apps.benchmark --nocomplexity --nospeech --nomultires --noslimmable \
        --official_code=/src/BigLittleNet      # and the official PyTorch model in ONNX Runtime

`--official_code` (a checkout of IBM/BigLittleNet; needs torch) exports the official model of
`--model` with `torch.onnx.export` and times it in ONNX Runtime in the same run, with the same
threads, interleaved with ours.
"""

from absl import app, flags

from bl_keras import benchmark, official

FLAGS = flags.FLAGS
flags.DEFINE_bool("complexity", True, "Print the params / MACs table of the paper's models.")
flags.DEFINE_bool("speech", True,
                  "Print the params / MACs table of the speech models beside Table 3.")
flags.DEFINE_bool("multires", True,
                  "Print the params / MACs of the multi-resolution models (seed 002) beside "
                  "its Tables 1 and 4.")
flags.DEFINE_bool("slimmable", True, "Print the US-MobileNets' params / MACs per width and "
                  "resolution (MutualNet, seed 003) beside the paper's 13-569 MFLOPs.")
flags.DEFINE_bool("speed", True, "Time the baseline against the Big-Little model.")
flags.DEFINE_string("baseline", "resnet50", "Baseline model for the speed comparison.")
flags.DEFINE_string("model", "bl_resnet50", "Model compared with the baseline.")
flags.DEFINE_integer("size", 224, "Input size for the speed comparison.")
flags.DEFINE_integer("batch", 16, "Batch size of the throughput measurement.")
flags.DEFINE_list("runtimes", list(benchmark.timing.RUNTIMES), "Runtimes to time.")
flags.DEFINE_integer("repeats", 10, "Timed runs per model and runtime at --batch.")
flags.DEFINE_integer("latency_repeats", 50, "Timed runs per model and runtime at batch 1.")
flags.DEFINE_string("official_code", None, "A checkout of IBM/BigLittleNet: also time the "
                    "official PyTorch --model, exported to ONNX, in ONNX Runtime.")
flags.DEFINE_string("official_weights", None, "Official weights for it (.pth/.pth.tar/.npz; "
                    "default: PyTorch's initialisation; speed does not depend on them).")


def main(argv):
    del argv
    if FLAGS.complexity:
        print("## Complexity (MACs of conv and FC layers; paper 'FLOPs' are MACs)\n")
        print(benchmark.complexity_table(benchmark.complexity_rows()), "\n", flush=True)
    if FLAGS.speech:
        print("## Speech complexity (Table 3; 64x49 input, one output frame)\n")
        print(benchmark.speech_complexity_table(benchmark.speech_complexity_rows()), "\n",
              flush=True)
    if FLAGS.multires:
        print(f"## Multi-resolution convolution, CIFAR-10 at {benchmark.MULTIRES_SIZE}x"
              f"{benchmark.MULTIRES_SIZE} (Tables 1 and 4; the paper's 'MFLOPS' are GMACs)\n")
        print(benchmark.multires_table1(benchmark.multires_rows(benchmark.MULTIRES_TABLE1)),
              "\n")
        print(benchmark.MULTIRES_EXAMPLE.format(scale=benchmark.EXAMPLE_SCALE), "\n")
        print(benchmark.multires_table4(benchmark.multires_rows(benchmark.MULTIRES_TABLE4)),
              "\n", flush=True)
    if FLAGS.slimmable:
        print("## US-MobileNets (MutualNet): sub-networks per width and resolution\n")
        rows = benchmark.slimmable_rows()
        print(benchmark.slimmable_table(rows), "\n")
        print(benchmark.slimmable_range(rows), "\n", flush=True)
    if FLAGS.speed:
        reference = None
        if FLAGS.official_code:
            torch_model = official.build(FLAGS.official_code, FLAGS.model, FLAGS.official_weights)
            reference = official.external(official.to_onnx(torch_model, FLAGS.size), FLAGS.size)
        timings, summary = benchmark.speed_comparison(
            FLAGS.baseline, FLAGS.model, size=FLAGS.size, batch=FLAGS.batch,
            runtimes=FLAGS.runtimes, repeats=FLAGS.repeats, latency_repeats=FLAGS.latency_repeats,
            official=reference,
        )
        print(f"## CPU speed at {FLAGS.size}x{FLAGS.size} (median of {FLAGS.repeats} runs at "
              f"batch {FLAGS.batch}, {FLAGS.latency_repeats} at batch 1; runs interleaved)\n")
        print(benchmark.timings_table(timings, FLAGS.baseline, FLAGS.model), "\n")
        print(benchmark.summary_table(summary))
        if reference is not None:
            print("\n## Against the official PyTorch model (torch.onnx.export, ONNX Runtime)\n")
            print(benchmark.official_table(timings, FLAGS.model, FLAGS.batch))


if __name__ == "__main__":
    app.run(main)
