//! What secure aggregation adds to a round, both halves in one process, one after the other
//! (no network): each client's key setup, sharing and masking, the server's unmasking, and
//! the bytes each client sends beyond its plain f32 update.
//!
//! Run: `cargo run --release -p strata-secagg --example round_cost [clients] [parameters]
//! [dropped] [out.json]` (defaults 20, 582,026 (FedAvgCNN on Fashion-MNIST), 1 dropped after
//! sharing, no file). One thread; the numbers are the median client and the whole server.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_secagg::encoding::{decode, encode, quantized_weight};
use strata_secagg::{CountOrFraction, Resolve, SecAggClient, SecAggConfig, SecAggServer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    let d: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(582_026);
    let dropped: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1);
    let out = args.next();
    // SecAgg+'s sparse graph beside the complete one: k = 7 (t = 5), and k = n (t = ⌈2n/3⌉).
    let configs = [
        ("k=7,t=5", SecAggConfig::default()),
        (
            "complete",
            SecAggConfig {
                num_shares: CountOrFraction::Fraction(1.0),
                reconstruction_threshold: CountOrFraction::Fraction(2.0 / 3.0),
                ..SecAggConfig::default()
            },
        ),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let update: Vec<f32> = (0..d).map(|_| rng.random_range(-0.01f32..0.01)).collect();
    let mut rows = Vec::new();
    for (name, config) in configs {
        let params = config.resolve(n)?;
        let ids: Vec<u32> = (0..n as u32).collect();
        let context = b"round_cost";
        let started = Instant::now();
        let mut server = SecAggServer::new(params.clone(), context, &ids, &mut rng)?;
        let mut server_seconds = started.elapsed().as_secs_f64();
        let mut clients = BTreeMap::new();
        let mut client_seconds: BTreeMap<u32, f64> = BTreeMap::new();
        let mut bytes_added: BTreeMap<u32, usize> = BTreeMap::new();
        let timed = |seconds: &mut f64, f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            *seconds += t.elapsed().as_secs_f64();
        };
        for &id in &ids {
            let t = Instant::now();
            let (client, keys) = SecAggClient::setup(id, context, params.clone())?;
            *client_seconds.entry(id).or_default() += t.elapsed().as_secs_f64();
            *bytes_added.entry(id).or_default() += 64;
            timed(&mut server_seconds, &mut || server.add_keys(id, keys).expect("keys"));
            clients.insert(id, client);
        }
        timed(&mut server_seconds, &mut || server.close_keys().expect("enough neighbours"));
        for (&id, client) in &mut clients {
            let neighbours = server.neighbour_keys(id)?;
            let t = Instant::now();
            let sealed = client.share_keys(neighbours)?;
            *client_seconds.entry(id).or_default() += t.elapsed().as_secs_f64();
            *bytes_added.entry(id).or_default() += 32 + sealed.to.iter().map(|(_, c)| 4 + c.len()).sum::<usize>();
            timed(&mut server_seconds, &mut || server.add_shares(id, sealed.clone()).expect("shares"));
        }
        timed(&mut server_seconds, &mut || server.close_shares().expect("enough neighbours"));
        let mut client_rng = ChaCha8Rng::seed_from_u64(2);
        for (&id, client) in clients.iter_mut().skip(dropped) {
            let shares = server.shares_for(id)?;
            let t = Instant::now();
            let encoded = encode(&params, &update, quantized_weight(&params, 300), &[], &mut client_rng)?.vector;
            let masked = client.mask(&shares, &encoded)?;
            *client_seconds.entry(id).or_default() += t.elapsed().as_secs_f64();
            // One u32 per value where the plain update is one f32, and the weight.
            *bytes_added.entry(id).or_default() += 4;
            timed(&mut server_seconds, &mut || server.add_masked(id, &masked).expect("vector"));
        }
        timed(&mut server_seconds, &mut || server.close_masked().expect("enough survivors"));
        for (&id, client) in clients.iter_mut().skip(dropped) {
            let request = server.unmask_request(id)?;
            let t = Instant::now();
            let reply = client.unmask(&request)?;
            *client_seconds.entry(id).or_default() += t.elapsed().as_secs_f64();
            *bytes_added.entry(id).or_default() +=
                reply.self_mask.iter().chain(&reply.mask_key).map(|(_, s)| 4 + s.len()).sum::<usize>();
            timed(&mut server_seconds, &mut || server.add_unmask(id, reply.clone()).expect("unmask"));
        }
        let t = Instant::now();
        let (sum, contributors) = server.finish()?;
        let mean = decode(&params, &sum, contributors)?.mean();
        server_seconds += t.elapsed().as_secs_f64();
        let worst = mean.iter().zip(&update).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let mut per_client: Vec<f64> = client_seconds.values().copied().collect();
        per_client.sort_by(f64::total_cmp);
        let median_bytes = {
            let mut b: Vec<usize> = bytes_added.values().copied().collect();
            b.sort_unstable();
            b[b.len() / 2]
        };
        let row = format!(
            "{{\"graph\":\"{name}\",\"clients\":{n},\"parameters\":{d},\"k\":{},\"t\":{},\"dropped\":{dropped},\
             \"client_seconds_median\":{:.4},\"server_seconds\":{:.4},\"bytes_added_median\":{median_bytes},\
             \"plain_update_bytes\":{},\"max_abs_error\":{worst:e}}}",
            params.neighbours,
            params.threshold,
            per_client[per_client.len() / 2],
            server_seconds,
            4 * d,
        );
        println!("{row}");
        rows.push(row);
    }
    if let Some(path) = out {
        std::fs::write(&path, rows.join("\n") + "\n")?;
    }
    Ok(())
}
