"""`mask_rcnn_shapes.py` with RoIPool instead of RoIAlign: the paper's ablation, on a CPU.

    python train.py --config configs/mask_rcnn_shapes_roipool.py --workdir runs/mask_rcnn_roipool
    python eval.py --config configs/mask_rcnn_shapes_roipool.py --workdir runs/mask_rcnn_roipool

Everything else (data, model, schedule, seed) is `mask_rcnn_shapes.py`'s, so the two runs
differ only in how RoI features are pooled: RoIPool rounds each RoI and its bins to whole
feature cells (stride 4 to 32 pixels on P2..P5), RoIAlign samples bilinearly at exact
positions. The rounding costs most at high IoU (mask AP75).

Measured (docs/mask_rcnn.md, "RoIAlign vs RoIPool"; 2 CPU cores, shared with another
training run for the first 30 minutes): train.py 53.5 min (RoIPool's step is about 3.5 times
RoIAlign's: `ops.roi_pool` scans the whole map per RoI); validation split, pycocotools: box
AP 0.502 / AP50 0.885 / AP75 0.491, mask AP 0.414 / AP50 0.798 / AP75 0.385, against
RoIAlign's mask 0.545 / 0.879 / 0.578 with the same budget and seed (+19.3 mask AP75).
"""

import importlib.util
import os


def get_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mask_rcnn_shapes.py")
    spec = importlib.util.spec_from_file_location("mask_rcnn_shapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.model.roi_heads.pooler = "roi_pool"
    return config
