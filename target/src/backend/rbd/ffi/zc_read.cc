// Zero-copy RBD reads: a C shim over librbd's C++ API (librbd.hpp,
// Ceph 16.2 "Pacific"), built by target/build.rs with feature `rbd`.
//
// librbd's C reads (rbd_aio_read/readv) copy the data they received from the
// OSD into the caller's buffer. Image::aio_read2 into a ceph::bufferlist
// instead hands back references to the messenger's buffers (librbd.hpp,
// "The target bufferlist is populated with references to buffers that
// contain the data"; librbd/io/ReadResult.cc claims the assembled result
// into the list). This shim submits such a read on the image handle the
// Rust side opened with the C API and, on completion, gives Rust the list's
// segments and an owner that keeps them alive until rbdzc_release().
//
// Contract with Rust (target/src/backend/rbd/ffi/zc.rs):
// - rbdzc_aio_read returns 0: `done` will be called exactly once, on one
//   of librbd's threads, with `arg`; < 0 (-errno): it will not be called.
// - `done` gets librbd's return value (bytes read or -errno), an owner
//   (never null) and the segments (pointer, length; valid until the owner
//   is released, and never written to by anyone). The segment array
//   itself is valid only during the call.
// - rbdzc_release(owner) frees the owner and drops its references to the
//   buffers; it may be called from any thread (ceph::buffer's reference
//   counts are atomic).
// No C++ exception leaves this file: every entry point catches them.

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <vector>

#include <rados/buffer.h>
#include <rbd/librbd.hpp>

extern "C" {
struct rbdzc_seg {
  const char *ptr;
  size_t len;
};
typedef void (*rbdzc_done_t)(void *arg, int64_t ret, void *owner,
                             const rbdzc_seg *segs, size_t nsegs);
int rbdzc_aio_read(void *image, uint64_t off, size_t len, rbdzc_done_t done,
                   void *arg) noexcept;
void rbdzc_release(void *owner) noexcept;
}

namespace {

// One read in flight, then the owner of its result.
struct Req {
  rbdzc_done_t done;
  void *arg;
  ceph::bufferlist bl;
};

// Hands librbd's C image handle to the C++ API for one call.
//
// librbd::Image (librbd.hpp) has exactly one non-static data member,
// `image_ctx_t ctx` (a void*, private), no base class and no virtual
// function, so it is a standard-layout class whose address is
// pointer-interconvertible with that member (C++17 [basic.compound]/4);
// the static_asserts below fail the build if a later librbd.hpp changes
// that. Its value is the image's `librbd::ImageCtx *`, as is the C API's
// rbd_image_t: librbd.cc's rbd_open does `*image = (rbd_image_t)ictx` and
// RBD::open `image.ctx = (image_ctx_t) ictx`, and every Image method starts
// with `ImageCtx *ictx = (ImageCtx *)ctx` (checked in Ceph's source from
// Firefly to Pacific). ~Image() closes the image when ctx is non-null, so
// the borrower sets it back to null before the Image is destroyed, also
// while unwinding.
static_assert(std::is_standard_layout<librbd::Image>::value,
              "librbd::Image is no longer standard-layout");
static_assert(sizeof(librbd::Image) == sizeof(librbd::image_ctx_t),
              "librbd::Image is no longer just its ctx pointer");

class Borrowed {
 public:
  explicit Borrowed(librbd::Image &img, void *handle) : img_(img) {
    *ctx() = handle;
  }
  ~Borrowed() { *ctx() = nullptr; }
  Borrowed(const Borrowed &) = delete;
  Borrowed &operator=(const Borrowed &) = delete;

 private:
  librbd::image_ctx_t *ctx() {
    return reinterpret_cast<librbd::image_ctx_t *>(&img_);
  }
  librbd::Image &img_;
};

// librbd's completion callback (RBD::AioCompletion, librbd.hpp): called
// once, after librbd assembled the read's result into req->bl.
void on_complete(librbd::completion_t c, void *p) {
  auto *comp = static_cast<librbd::RBD::AioCompletion *>(c);
  auto *req = static_cast<Req *>(p);
  int64_t ret = comp->get_return_value();
  comp->release();
  // Most results are one or two segments: no allocation for those.
  rbdzc_seg inline_segs[8];
  std::vector<rbdzc_seg> more;
  rbdzc_seg *segs = inline_segs;
  size_t n = 0;
  try {
    if (ret >= 0 && req->bl.get_num_buffers() > 8) {
      more.resize(req->bl.get_num_buffers());
      segs = more.data();
    }
    if (ret >= 0) {
      for (const auto &b : req->bl.buffers()) {
        if (b.length() > 0) {
          segs[n++] = rbdzc_seg{b.c_str(), b.length()};
        }
      }
    }
  } catch (...) {
    n = 0;
    ret = -ENOMEM;
  }
  // Rust's callback does not unwind (it is extern "C" and aborts on panic).
  req->done(req->arg, ret, req, segs, n);
}

}  // namespace

int rbdzc_aio_read(void *image, uint64_t off, size_t len, rbdzc_done_t done,
                   void *arg) noexcept {
  Req *req = nullptr;
  librbd::RBD::AioCompletion *comp = nullptr;
  try {
    req = new Req{done, arg, {}};
    // "This must be dynamically allocated with new, and must be released
    // with release()" (librbd.hpp); on_complete releases it.
    comp = new librbd::RBD::AioCompletion(req, on_complete);
  } catch (...) {
    delete req;
    return -ENOMEM;
  }
  try {
    librbd::Image img;
    Borrowed b(img, image);
    // Never fails synchronously in librbd 1.16: errors (out of range, a
    // closed image, the cluster) complete the completion.
    img.aio_read2(off, len, req->bl, comp, 0);
  } catch (...) {
    // Nothing in aio_read2 throws but allocation; whether librbd queued
    // the request before it threw is unknown, so it is treated as
    // submitted: if the completion comes, it is handled as usual; if not,
    // the Rust side's timeout fails the command and `req` leaks (memory
    // safety over a few bytes in a path that should not happen).
  }
  return 0;
}

void rbdzc_release(void *owner) noexcept {
  delete static_cast<Req *>(owner);
}
