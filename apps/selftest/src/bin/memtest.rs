//! Checks the runtime's `memcpy`, `memmove`, `memset` and `bcmp` (lib/rt/src/mem.rs, string
//! instructions) against byte-by-byte references: every size up to 80 bytes, every alignment
//! of source and destination within a word, and overlapping moves in both directions.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::hint::black_box;

use sel4_rt::println;
use sel4_rt::StartInfo;

sel4_rt::component_main!(main);

const MAX: usize = 80;
const AREA: usize = 2 * MAX + 16;

/// A recognisable, position-dependent pattern (so a byte in the wrong place shows).
fn fill(area: &mut [u8; AREA], seed: u8) {
    for (i, b) in area.iter_mut().enumerate() {
        *b = black_box((i as u8).wrapping_mul(31).wrapping_add(seed) | 1);
    }
}

/// The reference move: through a temporary copy, one byte at a time (black_box keeps the
/// compiler from turning the loops into calls to the functions under test).
fn reference_move(area: &mut [u8; AREA], dst: usize, src: usize, n: usize) {
    let mut tmp = [0u8; MAX];
    for i in 0..n {
        tmp[i] = black_box(area[src + i]);
    }
    for i in 0..n {
        area[dst + i] = black_box(tmp[i]);
    }
}

fn equal(a: &[u8; AREA], b: &[u8; AREA]) -> bool {
    (0..AREA).all(|i| black_box(a[i]) == black_box(b[i]))
}

fn main(_info: &'static StartInfo) {
    let mut failures = 0u32;
    let mut cases = 0u32;
    for n in 0..=MAX {
        for src in 0..8 {
            for dst in 0..16 {
                // memmove, possibly overlapping either way: src and dst within 16 bytes.
                let (mut got, mut want) = ([0u8; AREA], [0u8; AREA]);
                fill(&mut got, n as u8);
                fill(&mut want, n as u8);
                got.copy_within(black_box(src)..black_box(src + n), black_box(dst));
                reference_move(&mut want, dst, src, n);
                cases += 1;
                if !equal(&got, &want) {
                    failures += 1;
                    println!("memmove wrong: n {n}, src {src}, dst {dst}");
                }
                // memcpy: disjoint ranges, the destination in the upper half.
                let (mut got, mut want) = ([0u8; AREA], [0u8; AREA]);
                fill(&mut got, 7);
                fill(&mut want, 7);
                let d = MAX + 8 + dst % 8;
                let (lo, hi) = got.split_at_mut(d);
                hi[..n].copy_from_slice(&lo[black_box(src)..src + n]);
                reference_move(&mut want, d, src, n);
                cases += 1;
                if !equal(&got, &want) {
                    failures += 1;
                    println!("memcpy wrong: n {n}, src {src}, dst {d}");
                }
            }
            // memset and bcmp.
            let (mut got, mut want) = ([0u8; AREA], [0u8; AREA]);
            fill(&mut got, 3);
            fill(&mut want, 3);
            got[black_box(src)..src + n].fill(black_box(0xA5));
            for i in src..src + n {
                want[i] = black_box(0xA5);
            }
            cases += 1;
            if !equal(&got, &want) || got[..] != want[..] {
                failures += 1;
                println!("memset wrong: n {n}, at {src}");
            }
            if n > 0 {
                got[black_box(src + n - 1)] ^= 0x40;
                cases += 1;
                if got[src..src + n] == want[src..src + n] {
                    failures += 1;
                    println!("bcmp missed a difference in the last byte: n {n}, at {src}");
                }
            }
        }
    }
    if failures == 0 {
        println!("TEST PASS: memtest ({cases} cases)");
    } else {
        println!("TEST FAIL: memtest: {failures} of {cases} cases wrong");
    }
}
