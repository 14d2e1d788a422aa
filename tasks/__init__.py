"""esvr: the ES-VR pipeline as a package. Importing it (or any module under it) changes nothing in the process.

Layout (a core named after every dvc.yaml stage; shared parts in plain-named subpackages):

* stage cores — `sources`, `crawl/`, `annotators/` (train_value_detector, train_emotion), `annotate`,
  `esconv_analysis`, `base_model`, `datasets`, `train/` (train_tvd, train_rg_sft, train_rg_dpo), `personas`,
  `simulate` (and the stages added later beside them);
* `common/` — config, paths, environment defaults, io, hashing, logging, tracking, registry, orchestration, devices;
* `llm/` — the OpenAI-compatible client and the local server; `domain/` — taxonomy, prompts, chat template;
* `cli/` — the `esvr` typer app and its subcommands.

Entry points (the CLI, stage flows, test and benchmark harnesses) call `tasks.common.env.apply_defaults()`.
"""
