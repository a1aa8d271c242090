"""Where the FID extractors spend their time: torch.profiler's self CPU time of one batch of 16
random 32 px images through the reference (TorchScript) and the compiled fast extractor.

    PYTHONPATH=. python docs/fid_profile.py        # from the repository root; compiles first
"""

import torch
from torch.profiler import ProfilerActivity, profile

from hitgan.metrics.features import InceptionExtractor, preprocess

images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
ref, fast = InceptionExtractor(kind="reference"), InceptionExtractor(compile=True)
with torch.inference_mode():
    fast(images)  # compiles
    x = preprocess(images)
    for name, run in (("reference network (resize outside)", lambda: ref.net(x)),
                      ("compiled fast extractor (resize inside)", lambda: fast(images))):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        print(name)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
