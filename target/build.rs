//! Build script of the target crate: with feature `rbd`, compiles the C++
//! shim for zero-copy RBD reads (`src/backend/rbd/ffi/zc_read.cc`, over
//! librbd's C++ API; Debian `librbd-dev libradospp-dev`) and links it with
//! librbd, librados and the C++ runtime. Without the feature it does
//! nothing, so a build without Ceph needs no C++ compiler.

fn main() {
    #[cfg(feature = "rbd")]
    {
        let src = "src/backend/rbd/ffi/zc_read.cc";
        println!("cargo:rerun-if-changed={src}");
        cc::Build::new()
            .cpp(true)
            .std("c++17")
            .file(src)
            .warnings(true)
            // librbd.hpp and buffer.h use deprecated declarations of their own.
            .flag_if_supported("-Wno-deprecated-declarations")
            .compile("rbd_zc_read");
        println!("cargo:rustc-link-lib=rbd");
        println!("cargo:rustc-link-lib=rados");
    }
}
