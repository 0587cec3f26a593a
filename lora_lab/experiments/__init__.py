"""Experiments: many fine-tunes and the results files they write; the ``main()`` of the commands that run them
(finetune, bench, claims, precision, threads) lives here.

* :mod:`lora_lab.experiments.profiles` - the notebooks' real / offline / smoke profiles, and loading their backbones
and data
* :mod:`lora_lab.experiments.results` - the results file a sweep grows one run at a time (resumable, atomic)
* :mod:`lora_lab.experiments.runs` - one fine-tune as the notebooks run it, and a spread over seeds
* :mod:`lora_lab.experiments.finetune_job` - the fine-tune command: its config, checks, run and command line
* :mod:`lora_lab.experiments.bench` - speed and memory, full fine-tuning vs LoRA, measured
* :mod:`lora_lab.experiments.bench_results` - the committed benchmark results: finding them, their main table
* :mod:`lora_lab.experiments.sweeps` - the lessons' sweeps: a committed file, one point live, RUN_ALL recomputes
* :mod:`lora_lab.experiments.two_tasks` - two tasks on the same messages, one adapter each (lessons 6 and 7)
* :mod:`lora_lab.experiments.paired` - the one rule for "is this difference real?": paired over seeds
* :mod:`lora_lab.experiments.claims` - claims often made about LoRA, put to the test (notebook 10)
* :mod:`lora_lab.experiments.measures` - what a fine-tune changed: forgetting, perplexity, subspace similarity
* :mod:`lora_lab.experiments.bf16_quality` - does bf16 change the result? paired with fp32 by seed
* :mod:`lora_lab.experiments.contention` - how much a busy machine slows training, measured
* :mod:`lora_lab.experiments.gpu_memory` - will a fine-tune fit on this GPU? estimated from the committed measurement
* :mod:`lora_lab.experiments.step_profile` - where one LoRA training step spends its time (torch.profiler)
"""
