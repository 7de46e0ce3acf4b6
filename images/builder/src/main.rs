//! `cargo run -p nanovnf-build-images`: builds every appliance image and prints its size.

fn main() {
    match nanovnf_build_images::build_all() {
        Ok(images) => {
            println!("{:<8} {:>9} {:>9}  path", "image", "bytes", "KiB");
            for image in &images {
                println!(
                    "{:<8} {:>9} {:>9.1}  {}",
                    image.name,
                    image.size,
                    image.size as f64 / 1024.0,
                    image.path.display()
                );
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
