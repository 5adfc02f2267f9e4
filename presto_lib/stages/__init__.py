"""Stages: the top layer that owns every run of the pipeline (argparse, params, seeds, files, resume rules).

One module per DVC stage (`python -m presto_lib.stages.<name>`) or the helpers a notebook stage calls, all built
on `stages.common.start`. `stages.registry` lists every stage and `stages.render` writes dvc.yaml from it.
Layers below (audio/data -> models -> diffusion -> distill -> eval) hold maths and I/O only.
"""
