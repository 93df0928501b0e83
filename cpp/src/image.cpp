#include "torchship/image.h"

#include <algorithm>
#include <csetjmp>
#include <cstring>
#include <memory>
#include <string>

#include <libexif/exif-data.h>
#include <png.h>
#include <turbojpeg.h>

#include "torchship/errors.h"

namespace torchship {
namespace {

bool is_jpeg(std::string_view b) { return b.size() >= 3 && b.substr(0, 3) == std::string_view("\xFF\xD8\xFF", 3); }
bool is_png(std::string_view b) { return b.size() >= 8 && b.substr(0, 8) == std::string_view("\x89PNG\r\n\x1a\n", 8); }

void check_size(const char* format, int64_t width, int64_t height, const ImageLimits& limits) {
  if (width < 1 || height < 1) {
    throw InvalidInputError(std::string("invalid ") + format + ": its header says " + std::to_string(width) + "x" +
                            std::to_string(height) + " pixels");
  }
  if (width > limits.max_side || height > limits.max_side || width * height > limits.max_pixels) {
    throw TooLargeError(std::string(format) + " of " + std::to_string(width) + "x" + std::to_string(height) +
                        " pixels exceeds the image limits (" + std::to_string(limits.max_side) + " per side, " +
                        std::to_string(limits.max_pixels) + " pixels; --max-image-side, --max-image-pixels)");
  }
}

// EXIF orientation (1..8) of a JPEG; 1 when it has none. libexif finds the APP1 segment itself.
int exif_orientation(std::string_view bytes) {
  std::unique_ptr<ExifData, void (*)(ExifData*)> exif(
      exif_data_new_from_data(reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<unsigned>(bytes.size())),
      exif_data_unref);
  if (!exif) return 1;
  ExifEntry* entry = exif_content_get_entry(exif->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
  if (!entry || entry->format != EXIF_FORMAT_SHORT || entry->components != 1) return 1;
  const int value = exif_get_short(entry->data, exif_data_get_byte_order(exif.get()));
  return value >= 1 && value <= 8 ? value : 1;
}

// As PIL's ImageOps.exif_transpose: the stored pixels turned upright.
torch::Tensor apply_orientation(torch::Tensor hwc, int orientation) {
  switch (orientation) {
    case 2: return hwc.flip({1});                                       // mirrored left-right
    case 3: return hwc.flip({0, 1});                                    // rotated 180
    case 4: return hwc.flip({0});                                       // mirrored top-bottom
    case 5: return hwc.permute({1, 0, 2});                              // transposed
    case 6: return torch::rot90(hwc, -1, {0, 1});                       // rotated 90 clockwise to fix
    case 7: return torch::rot90(hwc, 2, {0, 1}).permute({1, 0, 2});     // transversed
    case 8: return torch::rot90(hwc, 1, {0, 1});                        // rotated 90 counter-clockwise to fix
    default: return hwc;
  }
}

torch::Tensor decode_jpeg(std::string_view bytes, const ImageLimits& limits) {
  std::unique_ptr<void, int (*)(tjhandle)> handle(tjInitDecompress(), tjDestroy);
  if (!handle) throw Error("cannot start the JPEG decoder");
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto size = static_cast<unsigned long>(bytes.size());
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(handle.get(), data, size, &width, &height, &subsampling, &colorspace) != 0) {
    throw InvalidInputError(std::string("invalid JPEG: ") + tjGetErrorStr2(handle.get()));
  }
  check_size("JPEG", width, height, limits);
  // Warnings (a truncated file, corrupt data) are errors: a partial image is no answer. Scans are
  // limited, so a progressive file cannot make the decoder loop for long.
  const int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
  const bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  auto out = torch::empty({height, width, cmyk ? 4 : 3}, torch::kUInt8);
  if (tjDecompress2(handle.get(), data, size, out.data_ptr<uint8_t>(), width, 0, height, cmyk ? TJPF_CMYK : TJPF_RGB,
                    flags) != 0) {
    throw InvalidInputError(std::string("invalid JPEG: ") + tjGetErrorStr2(handle.get()));
  }
  if (cmyk) {
    // As PIL: its JPEG reader assumes Adobe's inverted CMYK ("CMYK;I"), and its CMYK -> RGB is
    // R = (255 - K) - C * (255 - K) / 255 with its rounding (MULDIV255), on the uninverted values.
    const auto stored = out.to(torch::kInt32);
    const auto nk = stored.select(2, 3);  // 255 - K
    const auto channel = [&](int64_t i) {
      const auto product = (255 - stored.select(2, i)) * nk + 128;  // C * (255 - K), rounded
      return nk - torch::div(product + torch::div(product, 256, "floor"), 256, "floor");
    };
    out = torch::stack({channel(0), channel(1), channel(2)}, 2).to(torch::kUInt8);
  }
  return apply_orientation(out, exif_orientation(bytes)).contiguous();
}

// libpng reports errors by longjmp to the jmp_buf given here; nothing with a destructor may live in
// a frame it jumps over, so the decode below keeps only plain values until it returns.
struct PngReader {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::string_view bytes;
  size_t offset = 0;
  char message[256] = {};
  ~PngReader() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

void png_read_from_memory(png_structp png, png_bytep out, png_size_t length) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (r->bytes.size() - r->offset < length) png_error(png, "the file is truncated");
  std::memcpy(out, r->bytes.data() + r->offset, length);
  r->offset += length;
}

void png_record_error(png_structp png, png_const_charp message) {
  auto* r = static_cast<PngReader*>(png_get_error_ptr(png));
  std::snprintf(r->message, sizeof(r->message), "%s", message);
  png_longjmp(png, 1);
}

void png_ignore_warning(png_structp, png_const_charp) {}

// Returns false (with reader.message set) on a libpng error; `*out` is allocated once the size is checked.
bool png_decode(PngReader& reader, const ImageLimits& limits, torch::Tensor* out, bool* too_large, uint32_t* w,
                uint32_t* h) {
  if (setjmp(png_jmpbuf(reader.png))) return false;
  png_set_read_fn(reader.png, &reader, png_read_from_memory);
  // libpng's own size limit off: check_size() below answers for oversized images (413, not a parse error).
  png_set_user_limits(reader.png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
  png_read_info(reader.png, reader.info);  // the header chunks only: no pixel is decoded or allocated yet
  *w = png_get_image_width(reader.png, reader.info);
  *h = png_get_image_height(reader.png, reader.info);
  if (int64_t{*w} > limits.max_side || int64_t{*h} > limits.max_side || int64_t{*w} * *h > limits.max_pixels) {
    *too_large = true;
    return true;
  }
  // To 8-bit RGB as PIL's convert("RGB"): palettes expanded, grey replicated, alpha and tRNS dropped,
  // 16-bit samples cut to their high byte (PIL's "RGB;16B" raw mode).
  png_set_palette_to_rgb(reader.png);
  png_set_expand_gray_1_2_4_to_8(reader.png);
  png_set_strip_16(reader.png);
  png_set_strip_alpha(reader.png);
  png_set_gray_to_rgb(reader.png);
  png_set_interlace_handling(reader.png);
  png_read_update_info(reader.png, reader.info);
  if (png_get_channels(reader.png, reader.info) != 3 || png_get_bit_depth(reader.png, reader.info) != 8) {
    png_error(reader.png, "unsupported PNG layout");
  }
  *out = torch::empty({static_cast<int64_t>(*h), static_cast<int64_t>(*w), 3}, torch::kUInt8);
  auto* base = out->data_ptr<uint8_t>();
  const size_t stride = static_cast<size_t>(*w) * 3;
  std::unique_ptr<png_bytep[]> rows(new png_bytep[*h]);
  for (uint32_t y = 0; y < *h; ++y) rows[y] = base + y * stride;
  png_read_image(reader.png, rows.get());
  png_read_end(reader.png, nullptr);
  return true;
}

torch::Tensor decode_png(std::string_view bytes, const ImageLimits& limits) {
  PngReader reader;
  reader.bytes = bytes;
  reader.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, png_record_error, png_ignore_warning);
  if (!reader.png) throw Error("cannot start the PNG decoder");
  reader.info = png_create_info_struct(reader.png);
  if (!reader.info) throw Error("cannot start the PNG decoder");
  torch::Tensor out;
  bool too_large = false;
  uint32_t width = 0, height = 0;
  if (!png_decode(reader, limits, &out, &too_large, &width, &height)) {
    throw InvalidInputError(std::string("invalid PNG: ") + reader.message);
  }
  if (too_large) check_size("PNG", width, height, limits);
  return out;
}

void png_append(png_structp png, png_bytep data, png_size_t length) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), length);
}

void png_throw(png_structp png, png_const_charp message) {
  *static_cast<std::string*>(png_get_error_ptr(png)) = message;
  png_longjmp(png, 1);
}

std::string encode_jpeg(const uint8_t* pixels, int width, int height, int quality) {
  std::unique_ptr<void, int (*)(tjhandle)> handle(tjInitCompress(), tjDestroy);
  if (!handle) throw Error("cannot start the JPEG encoder");
  unsigned char* data = nullptr;
  unsigned long size = 0;
  if (tjCompress2(handle.get(), pixels, width, 0, height, TJPF_RGB, &data, &size, TJSAMP_420, quality, 0) != 0) {
    tjFree(data);
    throw Error(std::string("JPEG encoding failed: ") + tjGetErrorStr2(handle.get()));
  }
  std::string out(reinterpret_cast<const char*>(data), size);
  tjFree(data);
  return out;
}

// setjmp/longjmp for libpng's errors: no C++ object with a destructor may live in this frame.
bool png_encode(png_structp png, png_infop info, const uint8_t* pixels, png_bytep* rows, uint32_t width,
                uint32_t height, std::string* out) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_write_fn(png, out, png_append, nullptr);
  png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 6);
  for (uint32_t y = 0; y < height; ++y) rows[y] = const_cast<png_bytep>(pixels + size_t{y} * width * 3);
  png_set_rows(png, info, rows);
  png_write_png(png, info, PNG_TRANSFORM_IDENTITY, nullptr);
  return true;
}

std::string encode_png(const uint8_t* pixels, uint32_t width, uint32_t height) {
  std::string message;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &message, png_throw, png_ignore_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  std::unique_ptr<png_bytep[]> rows(new png_bytep[height]);
  std::string out;
  const bool ok = info && png_encode(png, info, pixels, rows.get(), width, height, &out);
  png_destroy_write_struct(&png, info ? &info : nullptr);
  if (!ok) throw Error("PNG encoding failed: " + (message.empty() ? std::string("cannot start the encoder") : message));
  return out;
}

}  // namespace

std::string encode_image(const torch::Tensor& rgb, ImageFormat format, int jpeg_quality) {
  if (rgb.scalar_type() != torch::kUInt8 || rgb.dim() != 3 || rgb.size(2) != 3 || rgb.size(0) < 1 || rgb.size(1) < 1) {
    throw Error("an image to encode must be uint8 [height, width, 3], not " + std::string(c10::toString(rgb.scalar_type())) +
                " " + c10::str(rgb.sizes()));
  }
  const auto pixels = rgb.cpu().contiguous();
  const auto* data = pixels.const_data_ptr<uint8_t>();
  const auto height = pixels.size(0), width = pixels.size(1);
  if (format == ImageFormat::Jpeg) {
    return encode_jpeg(data, static_cast<int>(width), static_cast<int>(height), std::clamp(jpeg_quality, 1, 100));
  }
  return encode_png(data, static_cast<uint32_t>(width), static_cast<uint32_t>(height));
}

torch::Tensor decode_image(std::string_view bytes, const ImageLimits& limits) {
  if (is_jpeg(bytes)) return decode_jpeg(bytes, limits);
  if (is_png(bytes)) return decode_png(bytes, limits);
  throw InvalidInputError("the body is not a JPEG or PNG image (" + std::to_string(bytes.size()) +
                          " bytes; expected a file starting with the JPEG or PNG signature)");
}

}  // namespace torchship
