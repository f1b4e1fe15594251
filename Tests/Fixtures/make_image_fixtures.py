"""Small synthetic JPEGs for the hostile-image tests (HardeningTests).

Run with a venv that has Pillow: .venv/bin/python Tests/Fixtures/make_image_fixtures.py
  tiny.jpg       16x16 gray gradient, baseline JPEG (a good file)
  truncated.jpg  the same file cut 40 bytes before its end (libjpeg: premature end)
  huge-header.jpg  tiny.jpg whose SOF0 header claims 30000 x 30000 pixels
  tiny-rgb.jpg   24x16 RGB gradient (ExternalEvalTests: a colour JPEG of another size)
"""
import io
import os

from PIL import Image

here = os.path.dirname(os.path.abspath(__file__))
img = Image.new("L", (16, 16))
img.putdata([(x * 16 + y * 3) % 256 for y in range(16) for x in range(16)])
buf = io.BytesIO()
img.save(buf, format="JPEG", quality=90)
good = buf.getvalue()
open(os.path.join(here, "tiny.jpg"), "wb").write(good)
open(os.path.join(here, "truncated.jpg"), "wb").write(good[:-40])
sof = good.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height (2), width (2)
huge = bytearray(good)
huge[sof + 5:sof + 7] = (30000).to_bytes(2, "big")
huge[sof + 7:sof + 9] = (30000).to_bytes(2, "big")
open(os.path.join(here, "huge-header.jpg"), "wb").write(bytes(huge))

# An RGB JPEG of another size and aspect for the external-set tests (ExternalEvalTests):
# 24x16, red increasing left to right, green top to bottom, blue constant.
rgb = Image.new("RGB", (24, 16))
rgb.putdata([(x * 10, y * 15, 128) for y in range(16) for x in range(24)])
rgb.save(os.path.join(here, "tiny-rgb.jpg"), format="JPEG", quality=95)
