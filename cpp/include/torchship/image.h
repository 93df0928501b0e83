#pragma once
// Encoded images (JPEG, PNG) -> RGB pixels, safely: the dimensions are read from the header and
// checked against the limits before any pixel is decoded, and a truncated or corrupt file is an
// error, never a crash. Every image becomes 8-bit RGB, as PIL's Image.convert("RGB") makes it
// (greyscale replicated, alpha dropped, CMYK converted, 16-bit scaled to 8, EXIF orientation
// applied for JPEG), so the server, the bindings and Python preprocess the same pixels.
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace torchship {

struct ImageLimits {
  int64_t max_pixels = 50'000'000;  // width x height; beyond: TooLargeError (HTTP 413)
  int64_t max_side = 16'384;        // either dimension
};

// Decodes `bytes` (JPEG or PNG, told apart by their signatures) into a uint8 tensor of shape
// [height, width, 3]. Throws InvalidInputError for anything that is not a complete, valid JPEG or
// PNG (naming the format and the decoder's reason), and TooLargeError when the header's dimensions
// exceed `limits`.
torch::Tensor decode_image(std::string_view bytes, const ImageLimits& limits = {});

enum class ImageFormat { Jpeg, Png };

// Encodes a uint8 [height, width, 3] RGB tensor (what an image model's postprocess graph returns).
// JPEG at `jpeg_quality` (1-100, 4:2:0 subsampling as PIL's default), PNG lossless.
std::string encode_image(const torch::Tensor& rgb, ImageFormat format, int jpeg_quality = 90);

}  // namespace torchship
