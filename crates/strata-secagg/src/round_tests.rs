//! Whole rounds, both halves in one process: the sum, dropouts at every stage, and the
//! requests an honest client refuses.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::encoding::{decode, encode, quantized_weight};
use crate::messages::UnmaskRequest;
use crate::params::{CountOrFraction, Resolve, RoundParams, SecAggConfig};
use crate::{SecAggClient, SecAggError, SecAggServer};

/// What a client stops before sending: it answers every stage before that one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Gone {
    Keys,
    Shares,
    Vector,
    Unmask,
}

fn config(k: u32, t: u32) -> SecAggConfig {
    SecAggConfig {
        num_shares: CountOrFraction::Count(k),
        reconstruction_threshold: CountOrFraction::Count(t),
        ..SecAggConfig::default()
    }
}

/// Runs a round over clients `0..inputs.len()` with `inputs[i]` already encoded; `gone`
/// says who stops answering when. Returns the unmasked sum and its contributors.
fn round(
    params: &RoundParams,
    inputs: &[Vec<u32>],
    gone: &BTreeMap<u32, Gone>,
    rng: &mut impl Rng,
) -> Result<(Vec<u32>, usize, SecAggServer), SecAggError> {
    let ids: Vec<u32> = (0..inputs.len() as u32).collect();
    let context = b"run r7 task 3";
    let mut server = SecAggServer::new(params.clone(), context, &ids, rng)?;
    let here = |id: u32, stage: Gone| gone.get(&id).is_none_or(|g| *g > stage);
    let mut clients = BTreeMap::new();
    for &id in &ids {
        let (client, keys) = SecAggClient::setup(id, context, params.clone())?;
        if here(id, Gone::Keys) {
            server.add_keys(id, keys)?;
            clients.insert(id, client);
        }
    }
    server.close_keys()?;
    for (&id, client) in clients.iter_mut().filter(|(id, _)| here(**id, Gone::Shares)) {
        let sealed = client.share_keys(server.neighbour_keys(id)?)?;
        server.add_shares(id, sealed)?;
    }
    server.close_shares()?;
    for (&id, client) in clients.iter_mut().filter(|(id, _)| here(**id, Gone::Vector)) {
        let masked = client.mask(&server.shares_for(id)?, &inputs[id as usize])?;
        server.add_masked(id, &masked)?;
    }
    server.close_masked()?;
    for (&id, client) in clients.iter_mut().filter(|(id, _)| here(**id, Gone::Unmask)) {
        let reply = client.unmask(&server.unmask_request(id)?)?;
        server.add_unmask(id, reply)?;
    }
    let (sum, n) = server.finish()?;
    Ok((sum, n, server))
}

/// Σ of the vectors of `who`, mod M: what the server must recover exactly.
fn plain_sum(params: &RoundParams, inputs: &[Vec<u32>], who: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut sum = vec![0u32; inputs[0].len()];
    for i in who {
        for (s, v) in sum.iter_mut().zip(&inputs[i as usize]) {
            *s = s.wrapping_add(*v);
        }
    }
    sum.into_iter().map(|v| params.reduce(v)).collect()
}

fn random_inputs(params: &RoundParams, n: usize, len: usize, rng: &mut impl Rng) -> Vec<Vec<u32>> {
    let q = params.quantization_range;
    (0..n).map(|_| (0..len).map(|_| rng.random_range(0..=q)).collect()).collect()
}

#[test]
fn the_unmasked_mean_is_fedavgs_within_the_quantization_bound() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let n = 20;
    let params = config(7, 5).resolve(n).unwrap();
    let dim = 500;
    // Updates of a few hundredths, clients of unequal size (a Dirichlet split's spread).
    let samples: Vec<u64> = (0..n).map(|i| 20 + (i as u64 * 37) % 900).collect();
    let updates: Vec<Vec<f32>> = (0..n).map(|_| (0..dim).map(|_| rng.random_range(-0.05f32..0.05)).collect()).collect();
    let weights: Vec<u32> = samples.iter().map(|&s| quantized_weight(&params, s)).collect();
    let inputs: Vec<Vec<u32>> =
        (0..n).map(|i| encode(&params, &updates[i], weights[i], &[], &mut rng).unwrap().vector).collect();

    let (sum, contributors, _) = round(&params, &inputs, &BTreeMap::new(), &mut rng).unwrap();
    assert_eq!(contributors, n);
    let decoded = decode(&params, &sum, contributors).unwrap();
    let (mean, total_weight) = (decoded.mean(), decoded.total_weight);

    let q = f64::from(params.quantization_range);
    let c = params.clipping_range;
    // Against the mean under the quantized weights: each client's stochastic rounding is off
    // by less than one level 2c/Q per value, so the sum by less than n·2c/Q.
    let w_hat: Vec<f64> = weights.iter().map(|&w| f64::from(w) / q).collect();
    let b_hat: f64 = w_hat.iter().sum();
    assert!((total_weight - b_hat).abs() < 1e-12);
    let rounding_bound = n as f64 * 2.0 * c / q / b_hat;
    // Against FedAvg's mean under the exact weights nᵢ/W: each weight is off by at most
    // 1/(2Q), which moves the mean by at most max|x|·Σ|ŵ−w|·2/Σŵ.
    let w: Vec<f64> = samples.iter().map(|&s| s as f64 / params.max_weight).collect();
    let max_abs = 0.05;
    let weight_bound = 2.0 * max_abs * w.iter().zip(&w_hat).map(|(a, b)| (a - b).abs()).sum::<f64>() / b_hat;
    let b: f64 = w.iter().sum();
    let mut worst = 0.0f64;
    for (e, got) in mean.iter().enumerate() {
        let under_hat = (0..n).map(|i| w_hat[i] * f64::from(updates[i][e])).sum::<f64>() / b_hat;
        let fedavg = (0..n).map(|i| w[i] * f64::from(updates[i][e])).sum::<f64>() / b;
        // f32 output: one more rounding of the decoded value.
        let f32_slack = 1e-7 * (1.0 + under_hat.abs());
        assert!((f64::from(*got) - under_hat).abs() <= rounding_bound + f32_slack, "element {e}");
        assert!((f64::from(*got) - fedavg).abs() <= rounding_bound + weight_bound + f32_slack, "element {e}");
        worst = worst.max((f64::from(*got) - fedavg).abs());
    }
    assert!(worst > 0.0, "the quantization is visible, so the bound is what is tested");
}

/// χ² of `values`' top six bits against the uniform law (64 cells, 63 degrees of freedom).
fn chi_square_top_bits(values: &[u32]) -> f64 {
    let mut cells = [0u64; 64];
    for v in values {
        cells[(v >> 26) as usize] += 1;
    }
    let expected = values.len() as f64 / 64.0;
    cells.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum()
}

#[test]
fn one_clients_masked_upload_looks_uniform() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (server, mut clients, params) = shared_round(6, 5, 3);
    // A constant-ish update: its encoding sits in a narrow band around Q/2, far from uniform.
    let update: Vec<f32> = (0..200_000).map(|i| 0.01 * (i % 7) as f32).collect();
    let encoded = encode(&params, &update, params.quantization_range, &[], &mut rng).unwrap().vector;
    let masked = clients[0].mask(&server.shares_for(0).unwrap(), &encoded).unwrap();
    // 63 degrees of freedom: P(χ² > 132) ≈ 1e-6 for uniform values (Wilson–Hilferty).
    let critical = 132.0;
    let plain = chi_square_top_bits(&encoded);
    let hidden = chi_square_top_bits(&masked);
    assert!(plain > 100.0 * critical, "the test can tell a plain vector: χ² = {plain}");
    assert!(hidden < critical, "the masked vector is not uniform: χ² = {hidden}");
}

#[test]
fn dropouts_at_every_stage_within_the_tolerance_give_the_exact_sum() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let n = 16;
    let params = config(7, 4).resolve(n).unwrap();
    let inputs = random_inputs(&params, n, 300, &mut rng);
    // k − t = 3 may go from any neighbourhood; one client goes at each stage.
    let gone: BTreeMap<u32, Gone> = [(2, Gone::Keys), (5, Gone::Shares), (9, Gone::Vector)].into_iter().collect();
    let (sum, contributors, server) = round(&params, &inputs, &gone, &mut rng).unwrap();
    let counted: Vec<u32> = (0..n as u32).filter(|i| !gone.contains_key(i)).collect();
    assert_eq!(contributors, counted.len());
    assert_eq!(sum, plain_sum(&params, &inputs, counted.iter().copied()));
    let d = server.dropouts();
    assert_eq!((d.setup, d.share_keys, d.masking, d.unmask), (vec![2], vec![5], vec![9], vec![]));
}

#[test]
fn up_to_k_minus_t_dropping_after_upload_still_give_the_exact_sum() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    // The complete graph of 7 with t = 4: any 3 may leave after uploading.
    let n = 7;
    let params = config(7, 4).resolve(n).unwrap();
    let inputs = random_inputs(&params, n, 100, &mut rng);
    let gone: BTreeMap<u32, Gone> = [0, 3, 6].into_iter().map(|i| (i, Gone::Unmask)).collect();
    let (sum, contributors, server) = round(&params, &inputs, &gone, &mut rng).unwrap();
    assert_eq!(contributors, n, "their vectors still count");
    assert_eq!(sum, plain_sum(&params, &inputs, 0..n as u32));
    assert_eq!(server.dropouts().unmask, vec![0, 3, 6]);
    // The same, with the three leaving before their upload instead.
    let gone: BTreeMap<u32, Gone> = [0, 3, 6].into_iter().map(|i| (i, Gone::Vector)).collect();
    let (sum, contributors, _) = round(&params, &inputs, &gone, &mut rng).unwrap();
    assert_eq!(contributors, 4);
    assert_eq!(sum, plain_sum(&params, &inputs, [1, 2, 4, 5].into_iter()));
}

#[test]
fn more_dropouts_than_the_tolerance_end_the_round_without_a_sum() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let n = 7;
    let params = config(7, 4).resolve(n).unwrap();
    let inputs = random_inputs(&params, n, 50, &mut rng);
    let four = |stage| -> BTreeMap<u32, Gone> { [0, 1, 2, 3].into_iter().map(|i| (i, stage)).collect() };
    for stage in [Gone::Keys, Gone::Shares, Gone::Vector] {
        let err = round(&params, &inputs, &four(stage), &mut rng).unwrap_err();
        assert!(matches!(err, SecAggError::TooFewNeighbours { live: 3, threshold: 4, .. }), "{stage:?}: {err}");
    }
    let err = round(&params, &inputs, &four(Gone::Unmask), &mut rng).unwrap_err();
    assert!(matches!(err, SecAggError::TooFewShares { got: 3, threshold: 4, .. }), "{err}");
}

/// `n` clients through setup and share-keys (k and t as given), ready to mask.
fn shared_round(n: u32, k: u32, t: u32) -> (SecAggServer, Vec<SecAggClient>, RoundParams) {
    let mut rng = ChaCha8Rng::seed_from_u64(u64::from(n));
    let params = config(k, t).resolve(n as usize).unwrap();
    let ids: Vec<u32> = (0..n).collect();
    let mut server = SecAggServer::new(params.clone(), b"ctx", &ids, &mut rng).unwrap();
    let mut clients: Vec<SecAggClient> = ids
        .iter()
        .map(|&id| {
            let (c, keys) = SecAggClient::setup(id, b"ctx", params.clone()).unwrap();
            server.add_keys(id, keys).unwrap();
            c
        })
        .collect();
    server.close_keys().unwrap();
    for c in &mut clients {
        let sealed = c.share_keys(server.neighbour_keys(c.id()).unwrap()).unwrap();
        server.add_shares(c.id(), sealed).unwrap();
    }
    server.close_shares().unwrap();
    (server, clients, params)
}

/// `n` clients with their vectors masked and sent, at the unmask stage (k = 5, t = 3).
fn masked_pair_of(n: u32) -> (SecAggServer, Vec<SecAggClient>, RoundParams) {
    let (mut server, mut clients, params) = shared_round(n, 5, 3);
    for c in &mut clients {
        let masked = c.mask(&server.shares_for(c.id()).unwrap(), &[1, 2, 3]).unwrap();
        server.add_masked(c.id(), &masked).unwrap();
    }
    server.close_masked().unwrap();
    (server, clients, params)
}

#[test]
fn a_client_refuses_to_reveal_both_secrets_of_anyone() {
    let (server, mut clients, _) = masked_pair_of(5);
    let honest = server.unmask_request(0).unwrap();
    let refused = |c: &mut SecAggClient, r: UnmaskRequest| c.unmask(&r).unwrap_err();

    // Client 1 listed both as alive (its self-mask share) and as dropped (its key share).
    let mut both = honest.clone();
    both.dead.push(1);
    assert!(matches!(refused(&mut clients[0], both), SecAggError::Refused(m) if m.contains("both")));

    // Asking again after an honest answer (the second list calls client 1 dropped): refused,
    // whatever the second request says.
    let (server, mut clients, _) = masked_pair_of(5);
    let first = server.unmask_request(0).unwrap();
    clients[0].unmask(&first).unwrap();
    let second = UnmaskRequest { active: first.active.iter().copied().filter(|&j| j != 1).collect(), dead: vec![1] };
    assert!(matches!(refused(&mut clients[0], second), SecAggError::OutOfOrder { .. }));

    // A stranger, too few survivors, itself missing, a duplicate: refused.
    let (server, mut clients, _) = masked_pair_of(5);
    let r = server.unmask_request(0).unwrap();
    let with = |active: Vec<u32>, dead: Vec<u32>| UnmaskRequest { active, dead };
    let cases = [
        with(r.active.iter().copied().chain([99]).collect(), vec![]),
        with(vec![0, 1], r.active.iter().copied().filter(|j| *j > 1).collect()),
        with(r.active.iter().copied().filter(|&j| j != 0).collect(), vec![]),
        with(r.active.iter().copied().chain([1]).collect(), vec![]),
    ];
    for request in cases {
        // Each on a fresh client: a refusal spends the round.
        let (_, mut fresh, _) = masked_pair_of(5);
        let err = refused(&mut fresh[0], request.clone());
        assert!(matches!(err, SecAggError::Refused(_)), "{request:?}: {err}");
    }
    assert!(clients[0].unmask(&r).is_ok(), "the honest request is answered");
}

#[test]
fn tampered_shares_and_stages_out_of_order_are_refused() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let params = config(3, 2).resolve(4).unwrap();
    let ids = [0u32, 1, 2, 3];
    let mut server = SecAggServer::new(params.clone(), b"ctx", &ids, &mut rng).unwrap();
    let mut clients: BTreeMap<u32, SecAggClient> = BTreeMap::new();
    for id in ids {
        let (c, k) = SecAggClient::setup(id, b"ctx", params.clone()).unwrap();
        server.add_keys(id, k).unwrap();
        clients.insert(id, c);
    }
    assert!(matches!(clients.get_mut(&0).unwrap().mask(&[], &[1]), Err(SecAggError::OutOfOrder { .. })));
    // A repeated key is refused at setup.
    let (_, k1) = SecAggClient::setup(9, b"ctx", params.clone()).unwrap();
    assert!(server.add_keys(1, k1).is_err(), "keys twice");
    server.close_keys().unwrap();

    let (mut a, ka) = SecAggClient::setup(0, b"ctx", params.clone()).unwrap();
    // A neighbourhood without the client's own keys.
    let mut foreign = server.neighbour_keys(0).unwrap();
    foreign.insert(0, ka);
    let (mut b, _) = SecAggClient::setup(0, b"ctx", params.clone()).unwrap();
    assert!(matches!(b.share_keys(foreign.clone()), Err(SecAggError::Refused(_))));
    // With its own keys, the altered ciphertext of a neighbour does not open.
    let sealed = a.share_keys(foreign).unwrap();
    assert!(sealed.to.iter().all(|(_, c)| c.len() == crate::SEALED_BYTES), "the wire checks this size");
    let neighbour = sealed.to[0].0;
    let sent_to_neighbour: BTreeSet<u32> = sealed.to.iter().map(|(j, _)| *j).collect();
    assert!(sent_to_neighbour.contains(&neighbour));
    let mut peer = clients.remove(&neighbour).unwrap();
    let mut keys_for_peer = server.neighbour_keys(neighbour).unwrap();
    keys_for_peer.insert(0, ka);
    peer.share_keys(keys_for_peer).unwrap();
    let mut altered = sealed.to[0].1.clone();
    altered[3] ^= 0x40;
    let err = peer.mask(&[(0, altered)], &[1, 2]).unwrap_err();
    assert!(err.to_string().contains("do not open"), "{err}");
    // Refused while masking, it sent no vector: it answers no unmask either.
    let request = UnmaskRequest { active: vec![neighbour, 0], dead: vec![] };
    assert!(matches!(peer.unmask(&request), Err(SecAggError::OutOfOrder { .. })));
}
