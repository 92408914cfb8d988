//! FedAvg: McMahan et al., "Communication-Efficient Learning of Deep Networks from
//! Decentralized Data", AISTATS 2017 (arXiv:1602.05629).
//!
//! Every picked client receives the global model, trains it, and sends all of it back; the
//! next global model is the average of the updates weighted by each client's training samples.

use std::sync::Arc;

use strata_core::selection::Selector;
use strata_core::tensor::TensorSet;

use super::{Aggregated, ClientInfo, Instruction, Strategy, weighted_average};
use crate::validate::ValidUpdate;

pub struct FedAvg {
    global: Arc<TensorSet>,
}

impl FedAvg {
    pub fn new(initial: TensorSet) -> Self {
        Self { global: Arc::new(initial) }
    }

    fn send_global(&self, clients: &[ClientInfo]) -> Vec<Instruction> {
        clients.iter().map(|c| Instruction::new(c.clone(), Arc::clone(&self.global), true, Selector::all())).collect()
    }
}

impl Strategy for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }

    fn configure_train(&mut self, _round: u64, picked: &[ClientInfo]) -> Vec<Instruction> {
        self.send_global(picked)
    }

    fn configure_evaluate(&mut self, _round: u64, clients: &[ClientInfo]) -> Vec<Instruction> {
        self.send_global(clients)
    }

    fn aggregate_train(&mut self, _round: u64, updates: Vec<ValidUpdate>) -> Aggregated {
        let weighted = updates.iter().map(|u| (u.parameters(), u.num_samples() as f64));
        match weighted_average(weighted) {
            Some(avg) => {
                self.global = Arc::new(avg);
                Aggregated::Updated
            }
            None => Aggregated::Skipped { reason: "no update with training samples".into() },
        }
    }

    fn global(&self) -> Option<Arc<TensorSet>> {
        Some(Arc::clone(&self.global))
    }

    fn summary(&self) -> Vec<(&'static str, String)> {
        vec![("method", "fedavg".into()), ("weighting", "training samples".into())]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::validate::ValidUpdate;
    use strata_core::tensor::NamedTensor;

    fn set(values: &[f32]) -> TensorSet {
        TensorSet::new(vec![NamedTensor::new("w", vec![values.len()], values.to_vec()).unwrap()]).unwrap()
    }

    fn client(index: u32) -> ClientInfo {
        ClientInfo { id: uuid::Uuid::from_u128(index as u128 + 1), index }
    }

    /// Runs one FedAvg round from `initial` over (values, samples) updates; returns the new global.
    fn check(initial: &[f32], updates: &[(&[f32], u64)]) -> Vec<f32> {
        let mut strategy = FedAvg::new(set(initial));
        let updates = updates
            .iter()
            .enumerate()
            .map(|(i, (v, n))| ValidUpdate::for_tests(client(i as u32), set(v), *n))
            .collect();
        assert!(matches!(strategy.aggregate_train(0, updates), Aggregated::Updated));
        strategy.global().unwrap().get("w").unwrap().values.clone()
    }

    #[test]
    fn global_is_the_sample_weighted_mean() {
        assert_eq!(check(&[0.0, 0.0], &[(&[1.0, 2.0], 1), (&[3.0, 6.0], 3)]), vec![2.5, 5.0]);
        assert_eq!(check(&[9.0], &[(&[1.0], 10)]), vec![1.0]);
    }

    #[test]
    fn every_client_gets_the_same_global_and_uploads_everything() {
        let mut strategy = FedAvg::new(set(&[1.0]));
        let tasks = strategy.configure_train(0, &[client(0), client(1)]);
        assert_eq!(tasks.len(), 2);
        assert!(Arc::ptr_eq(&tasks[0].parameters, &tasks[1].parameters));
        assert!(tasks.iter().all(|t| t.parameters_are_global && t.upload.matches("head.weight")));
    }

    #[test]
    fn no_updates_keeps_the_previous_model() {
        let mut strategy = FedAvg::new(set(&[1.0]));
        assert!(matches!(strategy.aggregate_train(0, vec![]), Aggregated::Skipped { .. }));
        assert_eq!(strategy.global().unwrap().get("w").unwrap().values, vec![1.0]);
    }
}
