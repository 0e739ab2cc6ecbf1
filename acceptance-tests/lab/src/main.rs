//! `castle-lab`: starts and stops castle's lab on loopback.

fn main() {
    println!("castle-lab: nothing to start yet");
}
