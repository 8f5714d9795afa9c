"""Sliced inference against the shrunk whole image, on mosaics of built-in validation images.

Each mosaic puts ``--grid``² validation images of the built-in amounts (128² each) side by side,
with their boxes shifted accordingly. A detector trained at 128 px then predicts each mosaic three
ways, all scored with the COCO evaluation against the mosaics' boxes:

* **one by one**: each 128² image alone (the reference: what the model does at its own scale);
* **tiled**: ``predict_tiled`` over the whole mosaic, windows of 128 px overlapping by half;
* **shrunk**: the mosaic resized to 128 px on its longer side, as a plain ``predict`` would.

    python benchmarks/bench_tiling.py --weights RUN/checkpoints/last.safetensors [--grid 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hybridvision.api import load_trained, prepare_image
from hybridvision.engine.inference import scale_detections
from hybridvision.engine.tiling import predict_tiled
from hybridvision.evaluation.coco import detections_to_coco_results, evaluate_coco
from hybridvision.imageio import load_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", default="data/amounts/val", help="a COCO split: annotations.json + images/")
    ap.add_argument("--grid", type=int, default=4)
    ap.add_argument("--overlap", type=float, default=0.5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, info = load_trained(args.weights, "cpu")
    model.score_thresh = min(float(model.score_thresh), 0.05)
    size = int(info["image_size"])
    root = Path(args.data)
    coco = json.loads((root / "annotations.json").read_text())
    anns: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    per = args.grid * args.grid
    images = sorted(coco["images"], key=lambda im: im["id"])
    mosaics = [images[i:i + per] for i in range(0, len(images) - per + 1, per)]
    gt = {"images": [], "annotations": [], "categories": coco["categories"]}
    model.detections_per_img = 100 * per  # a mosaic holds the objects of `per` images
    results = {"one by one": [], "tiled": [], "shrunk": []}
    cat_ids = info.get("label_to_cat_id") or [c["id"] for c in coco["categories"]]
    for m_id, group in enumerate(mosaics, 1):
        w0, h0 = group[0]["width"], group[0]["height"]
        canvas = torch.zeros(3, args.grid * h0, args.grid * w0)
        singles = []
        for k, im in enumerate(group):
            oy, ox = (k // args.grid) * h0, (k % args.grid) * w0
            img = load_image(root / "images" / im["file_name"])
            canvas[:, oy:oy + h0, ox:ox + w0] = img
            for a in anns.get(im["id"], []):
                x, y, w, h = a["bbox"]
                gt["annotations"].append({**a, "id": len(gt["annotations"]) + 1, "image_id": m_id,
                                          "bbox": [x + ox, y + oy, w, h]})
            batch, (h, w) = prepare_image(img, size)
            with torch.no_grad():
                d = model.decode(model(batch, [(h, w)]), [(h, w)])[0]
            d = scale_detections(d, w0 / w, h0 / h)
            d["boxes"] = d["boxes"] + torch.tensor([ox, oy, ox, oy], dtype=d["boxes"].dtype)
            singles.append(d)
        gt["images"].append({"id": m_id, "file_name": f"mosaic{m_id}.png", "width": canvas.shape[2],
                             "height": canvas.shape[1]})
        one = {k: torch.cat([d[k] for d in singles]) for k in ("boxes", "scores", "labels")}
        with torch.no_grad():
            tiled = predict_tiled(model, canvas, size, overlap=args.overlap, max_detections=100 * per)
            batch, (h, w) = prepare_image(canvas, size)
            shrunk = model.decode(model(batch, [(h, w)]), [(h, w)])[0]
        shrunk = scale_detections(shrunk, canvas.shape[2] / w, canvas.shape[1] / h)
        for name, dets in (("one by one", one), ("tiled", tiled), ("shrunk", shrunk)):
            results[name] += detections_to_coco_results([dets], [m_id], cat_ids)
    print(f"{len(mosaics)} mosaics of {args.grid}×{args.grid} images ({args.grid * 128}² px), model at {size} px")
    for name, res in results.items():
        m = evaluate_coco(gt, res, per_class=False)["metrics"]
        print(f"  {name:11s} AP {100 * m['AP']:5.1f}  AP50 {100 * m['AP50']:5.1f}  APs {100 * m['APs']:5.1f}")


if __name__ == "__main__":
    main()
