"""``make bench-scale``: the pipeline at N = 130, 260 and 520 stations, against the science it carries out.

For each N (ascending) and each round, the science bound is measured (:mod:`bench.scale.science`), then each
mode runs once, interleaved, each as its own ``xcorrflow run`` process (:mod:`bench.scale.runner`) on the
benchmark's own stack (:mod:`bench.scale.stack`). Per run: makespan, first result, pairs/s, core-seconds by
process group, peak RSS by service and bytes written, sampled from ``/proc`` (:mod:`bench.scale.sampler`);
a run that fails or does not fit under the memory cap is recorded with its reason. The report
(:mod:`bench.scale.report`) writes ``bench/results/scale.{json,md,png}``.
"""
