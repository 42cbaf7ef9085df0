//! One seeded run: builds the turmoil simulation (node hosts on tempdirs that outlive crashes,
//! the admin, client, monitor and verifier hosts), drives it step by step while the fault
//! injector plays its schedule, and checks the invariants at the end.

use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::{self, NodeSpec, EPOCH_MS};
use crate::determinism;
use crate::faults::{self, FaultKind, Injector};
use crate::history::{now_ms, Shared};
use crate::invariants;
use crate::membership;
use crate::report::SeedReport;
use crate::workload::{self, WorkerSpec};

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct Config {
    pub nodes: usize,
    pub clients: usize,
    pub ops_per_client: usize,
    /// Clients stop starting operations this long after the cluster formed.
    pub workload_ms: u64,
    /// Faults are injected from 1 s after formation until this long after it.
    pub fault_window_ms: u64,
    pub faults: Vec<FaultKind>,
    /// Upper bound of a message's latency on a healthy network.
    pub max_latency_ms: u64,
    /// The run fails if it has not finished after this much simulated time.
    pub max_sim_ms: u64,
    pub repos: Vec<String>,
    pub tags: Vec<String>,
    /// Let the seed add a spare node and/or remove one during the faults.
    pub membership_changes: bool,
    /// Keep the trace's lines (for `--trace`), not just its hash.
    pub keep_trace: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nodes: 3,
            clients: 3,
            ops_per_client: 60,
            workload_ms: 30_000,
            fault_window_ms: 25_000,
            faults: FaultKind::ALL.to_vec(),
            max_latency_ms: 5,
            max_sim_ms: 400_000,
            repos: vec!["sim/app".into(), "sim/base/db".into()],
            tags: vec!["latest".into(), "stable".into(), "v1".into()],
            membership_changes: true,
            keep_trace: false,
        }
    }
}

/// Why a run produced no report at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create the nodes' data directories: {0}")]
    DataDir(std::io::Error),
    #[error("cannot start the simulation thread: {0}")]
    Thread(std::io::Error),
}

/// A finished run: the report and, when kept, the trace lines.
pub struct Outcome {
    pub report: SeedReport,
    pub trace: Vec<String>,
}

/// Panic messages raised while a run was going (the hook is process-wide).
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = format!("{info}");
            if let Ok(mut panics) = PANICS.lock() {
                panics.push(msg.lines().next().unwrap_or("").to_string());
            }
            if std::env::var_os("KEELSON_SIM_PANIC_BACKTRACE").is_some() {
                default(info);
            }
        }));
    });
}

/// Runs `seed` on a fresh thread whose randomness comes from the seed (see [`determinism`]).
pub fn run(seed: u64, config: &Config) -> Result<Outcome, RunError> {
    install_panic_hook();
    let config = config.clone();
    let started = Instant::now();
    let handle = std::thread::Builder::new()
        .name(format!("sim-{seed}"))
        .stack_size(64 << 20)
        .spawn(move || {
            determinism::seed_thread(seed);
            run_here(seed, &config)
        })
        .map_err(RunError::Thread)?;
    match handle.join() {
        Ok(Ok(mut outcome)) => {
            outcome.report.wall_ms = started.elapsed().as_millis() as u64;
            Ok(outcome)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            let panics = PANICS.lock().map(|p| p.join(" | ")).unwrap_or_default();
            Ok(Outcome {
                report: SeedReport {
                    seed,
                    trace_hash: "none".into(),
                    failures: vec![crate::history::Failure {
                        invariant: "panic".into(),
                        detail: format!("the simulation panicked: {panics}"),
                    }],
                    ..Default::default()
                },
                trace: Vec::new(),
            })
        }
    }
}

/// Where the nodes' data directories go: `KEELSON_SIM_DIR`, else memory-backed `/dev/shm` when
/// there is one (fsync is then free, so runs are faster), else the system temp directory.
fn data_root() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("KEELSON_SIM_DIR") {
        return dir.into();
    }
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn run_here(seed: u64, config: &Config) -> Result<Outcome, RunError> {
    if let Ok(mut panics) = PANICS.lock() {
        panics.clear();
    }
    determinism::anchor();
    let mut rng = StdRng::seed_from_u64(seed);
    let changes = if config.membership_changes {
        membership::Changes::draw(&mut rng, config.nodes, config.fault_window_ms)
    } else {
        membership::Changes {
            plan: membership::Plan::Keep,
            add_at_ms: 0,
            remove_at_ms: 0,
            first_contact: 0,
        }
    };
    let total = config.nodes + usize::from(changes.plan.adds());
    let skews = crate::skew::draw(&mut rng, total);
    let fra_dir = tempfile::Builder::new()
        .prefix("keelson-sim-fra-")
        .tempdir_in(data_root())
        .map_err(RunError::DataDir)?;
    let fra = crate::regions::fra_spec(fra_dir.path().to_path_buf());
    let dirs: Vec<tempfile::TempDir> = (0..total)
        .map(|_| tempfile::Builder::new().prefix("keelson-sim-").tempdir_in(data_root()))
        .collect::<Result<_, _>>()
        .map_err(RunError::DataDir)?;
    // Every node that takes part: the original ones, then the spare the plan may add.
    let mut nodes: Vec<NodeSpec> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| NodeSpec {
            id: i as u64 + 1,
            name: format!("node{}", i + 1),
            fault_domain: format!("fd{}", i % 3 + 1),
            data_dir: dir.path().to_path_buf(),
            clock_skew_ms: skews[i],
        })
        .collect();
    // A replacement goes into the fault domain of the node it replaces, as an operator would.
    if let membership::Plan::Replace { remove } = changes.plan {
        nodes[config.nodes].fault_domain = nodes[remove].fault_domain.clone();
    }
    let originals: Vec<NodeSpec> = nodes[..config.nodes].to_vec();
    let spare = nodes.get(config.nodes).cloned();
    let shared = Rc::new(Shared::new(config.keep_trace));
    for node in nodes.iter().filter(|n| n.clock_skew_ms != 0) {
        shared.trace(0, format!("clock {} skew {} ms", node.name, node.clock_skew_ms));
        shared.count("fault.clock-skewed-node", 1);
    }
    let alarm = crate::lockstep::HangAlarm::start(seed).map_err(RunError::Thread)?;

    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(config.max_sim_ms))
        .tick_duration(Duration::from_millis(1))
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .min_message_latency(Duration::from_millis(0))
        .max_message_latency(Duration::from_millis(config.max_latency_ms))
        .tcp_capacity(1 << 20)
        .enable_random_order()
        .build_with_rng(Box::new(StdRng::seed_from_u64(rng.gen())));

    for node in &nodes {
        let spec = node.clone();
        sim.host(node.name.as_str(), move || cluster::node_host(spec.clone()));
    }
    {
        let spec = fra.clone();
        sim.host(fra.name.as_str(), move || cluster::node_host(spec.clone()));
    }
    {
        let shared = shared.clone();
        sim.host(crate::webhooks::HOOKS_HOST, move || {
            crate::webhooks::receiver(shared.clone())
        });
    }
    {
        let backends: Vec<String> = nodes.iter().map(NodeSpec::api).collect();
        sim.host(cluster::LB_HOST, move || cluster::lb_host(backends.clone()));
    }
    {
        let (shared, originals, changes, fra) = (shared.clone(), originals.clone(), changes.clone(), fra.clone());
        sim.client("admin", async move {
            match cluster::form(&shared, &originals).await {
                Ok(()) => shared.trace(now_ms(), "admin cluster formed"),
                Err(e) => shared.fail("cluster_formation", e),
            }
            shared.formed_at.set(Some(now_ms()));
            tokio::join!(
                crate::retention::set_policy(&shared, &originals),
                membership::run(&shared, changes, originals.clone(), spare),
                crate::regions::link(&shared, &fra),
                crate::webhooks::register(&shared, &originals),
            );
            Ok(())
        });
    }
    let mut others = vec![
        "admin".to_string(),
        "monitor".to_string(),
        "verifier".to_string(),
        "wan-writer".to_string(),
        "wan-verifier".to_string(),
        cluster::LB_HOST.to_string(),
        fra.name.clone(),
        crate::webhooks::HOOKS_HOST.to_string(),
    ];
    for c in 0..config.clients {
        let spec = WorkerSpec {
            name: format!("client{}", c + 1),
            seed: rng.gen(),
            nodes: nodes
                .iter()
                .map(|n| n.name.clone())
                .chain(std::iter::once(cluster::LB_HOST.to_string()))
                .collect(),
            repos: config.repos.clone(),
            tags: config.tags.clone(),
            ops: config.ops_per_client,
            stop_after_ms: config.workload_ms,
        };
        others.push(spec.name.clone());
        let shared = shared.clone();
        sim.client(spec.name.clone().as_str(), workload::worker(shared, spec));
    }
    sim.client("monitor", cluster::monitor(shared.clone(), nodes.clone()));
    sim.client(
        "wan-writer",
        crate::regions::referrer_writer(shared.clone(), config.tags.clone(), config.workload_ms),
    );
    sim.client("wan-verifier", crate::regions::verifier(shared.clone(), nodes.clone()));
    sim.client(
        "verifier",
        invariants::verifier(
            shared.clone(),
            nodes.clone(),
            config.clients,
            config.repos.clone(),
            config.tags.clone(),
        ),
    );

    let episodes = faults::schedule(&mut rng, 1_000, config.fault_window_ms, &config.faults);
    let mut injector = Injector::new(
        episodes,
        nodes.clone(),
        others,
        vec![fra.name.clone()],
        Duration::from_millis(config.max_latency_ms),
    );
    loop {
        crate::lockstep::set_sim_now(sim.elapsed());
        let now = sim.elapsed().as_millis() as u64;
        injector.advance(&mut sim, &shared, now);
        let stepped = sim.step();
        crate::lockstep::step_done();
        match stepped {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                shared.fail("simulation", e.to_string());
                break;
            }
        }
    }
    let sim_ms = sim.elapsed().as_millis() as u64;
    drop(sim);
    let unsettled = crate::lockstep::settle_timeouts();
    if unsettled > 0 {
        shared.count("sim.settle_timeouts", unsettled);
    }
    drop(alarm);
    let panics = PANICS.lock().map(|p| p.clone()).unwrap_or_default();
    for p in panics {
        shared.fail("panic", p);
    }
    invariants::after_run(&shared);
    drop(dirs);
    drop(fra_dir);

    let report = SeedReport {
        seed,
        trace_hash: shared.trace_hash(),
        sim_ms,
        wall_ms: 0,
        counters: shared.counters.borrow().clone(),
        failures: shared.failures.borrow().clone(),
    };
    let trace = shared.trace_lines.borrow_mut().take().unwrap_or_default();
    Ok(Outcome { report, trace })
}
