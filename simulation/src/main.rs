//! `cave-simulation`: run seeds of the deterministic simulation and check them.
//!
//! ```text
//! cargo run -p cave-simulation --release -- --seeds 0..1000 [--nodes N] [--scenario NAME] [--inject-bug NAME]
//! cargo run -p cave-simulation --release -- --seed 42 [--scenario NAME] [--verbose]
//! ```

use std::process::ExitCode;
use std::time::Instant;

use cave_simulation::{parse_seeds, real, run, run_many, Bug, Options, Outcome, Scenario};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "cave-simulation",
    about = "Deterministic simulation of Cave's replication core under faults, with a convergence checker",
    after_help = "Without --scenario, seed S runs scenario number S modulo the rotation (see --list), so any \
                  range of at least 13 consecutive seeds covers every scenario.\nExit status: 0 only if every \
                  seed passed."
)]
struct Cli {
    /// Seeds to run: A..B (end excluded), A..=B, or one seed.
    #[arg(long, default_value = "0..100", conflicts_with = "seed")]
    seeds: String,
    /// Replay one seed and print its event-trace hash (the same on every run).
    #[arg(long)]
    seed: Option<u64>,
    /// Initial cluster size (2 to 50 make sense; default: drawn from the scenario's range).
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=200))]
    nodes: Option<u64>,
    /// Scenario name, or "all" for the default rotation.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Run a deliberately broken variant: lww-arrival-order, lww-tie-arrival-order, ae-skip-last-bucket,
    /// purge-without-rejoin.
    #[arg(long, value_name = "NAME")]
    inject_bug: Option<Bug>,
    /// Threads running seeds in parallel (each seed is one single-threaded deterministic run).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print every simulated event (with --seed).
    #[arg(long)]
    verbose: bool,
    /// Print everything that happens to one key (with --seed).
    #[arg(long, value_name = "KEY")]
    watch: Option<String>,
    /// Print one line per seed.
    #[arg(long)]
    each: bool,
    /// List the scenarios and bugs, and exit.
    #[arg(long)]
    list: bool,
    /// Run whole nodes (tonic, axum, tokio) on turmoil's simulated network instead of the core alone; seed
    /// S runs real scenario number S modulo their number unless --scenario names one (see --list).
    #[arg(long, conflicts_with_all = ["inject_bug", "nodes", "verbose", "watch"])]
    real: bool,
    /// With --real: weaken the transport (no-keep-alive: must still pass; no-keep-alive-no-redial: must fail).
    #[arg(long, value_name = "NAME", requires = "real")]
    transport_fault: Option<String>,
}

fn line(o: &Outcome) -> String {
    let s = &o.stats;
    format!(
        "seed {} {:<17} nodes {:>2}->{:<2} {} trace {:016x}  sim {:>6.1}s (quiet {:>5.1}s)  {:>7} events  {:>5} acked  {} ms",
        o.options.seed,
        o.options.scenario.name(),
        s.initial_nodes,
        s.final_nodes,
        if o.passed() { "PASS" } else { "FAIL" },
        o.trace_hash,
        s.sim_ms as f64 / 1e3,
        s.quiescence_ms as f64 / 1e3,
        s.events,
        s.writes_acked,
        s.wall_ms,
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        println!("scenarios (rotation order; seed S runs number S % 13 unless --scenario is given):");
        for sc in Scenario::ALL {
            let rotated = Scenario::ROTATION.contains(&sc);
            let note = if rotated { "" } else { " (not in the rotation)" };
            println!("  {:<18}{}{note}", sc.name(), sc.describe());
        }
        println!("real-transport scenarios (--real; seed S runs number S % 6 unless --scenario is given):");
        for sc in real::Scenario::ALL {
            println!("  {:<18}{} nodes", sc.name(), sc.nodes());
        }
        println!("transport faults (--real --transport-fault):");
        for fault in real::TransportFault::ALL {
            println!("  {}", fault.name());
        }
        println!("bugs (--inject-bug):");
        for bug in Bug::ALL {
            println!("  {:<24}best caught by --scenario {}", bug.name(), bug.scenario());
        }
        return ExitCode::SUCCESS;
    }
    if cli.real {
        return run_real(&cli);
    }
    let scenario: Option<Scenario> = if cli.scenario == "all" {
        None
    } else {
        match cli.scenario.parse() {
            Ok(sc) => Some(sc),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let make = |seed: u64| Options {
        seed,
        scenario: scenario.unwrap_or_else(|| Scenario::for_seed(seed)),
        nodes: cli.nodes.map(|n| n as usize),
        bug: cli.inject_bug,
        verbose: cli.verbose,
        watch: cli.watch.clone(),
    };

    if let Some(seed) = cli.seed {
        let outcome = run(&make(seed));
        println!("{}", line(&outcome));
        let s = &outcome.stats;
        println!(
            "  messages: {} sent, {} delivered, {} dropped, {} duplicated; anti-entropy rounds {} ({} timed out); \
             {} acked writes, {} lost in crashes; {} crashes, {} joins, {} leaves; {} tombstones purged, \
             {} entries forgotten (pull-first), {} HLC ties, {} entries held back for clock drift",
            s.sent,
            s.delivered,
            s.dropped,
            s.duplicated,
            s.ae_rounds,
            s.ae_timeouts,
            s.writes_acked,
            s.writes_lost,
            s.crashes,
            s.joins,
            s.leaves,
            s.purged,
            s.forgotten,
            s.hlc_ties,
            s.clock_rejections
        );
        println!("trace hash: {:016x}", outcome.trace_hash);
        if outcome.passed() {
            return ExitCode::SUCCESS;
        }
        print!("{}", outcome.report());
        return ExitCode::FAILURE;
    }

    let seeds = match parse_seeds(&cli.seeds) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let jobs = cli
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let total = seeds.end - seeds.start;
    let started = Instant::now();
    let mut cluster_ms = 0u64;
    let mut sim_ms = 0u64;
    let mut done = 0u64;
    let mut fails = 0u64;
    let failed = run_many(seeds.clone(), make, jobs, |o| {
        done += 1;
        cluster_ms += o.stats.cluster_ms;
        sim_ms += o.stats.sim_ms;
        if cli.each {
            println!("{}", line(o));
        }
        if !o.passed() {
            fails += 1;
            print!("{}", o.report());
        }
        if !cli.each && done.is_multiple_of(100) {
            eprintln!("... {done}/{total} seeds, {fails} failed so far");
        }
    });
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{} seeds ({}..{}){}{}: {} passed, {} failed in {:.1} s on {} threads",
        total,
        seeds.start,
        seeds.end,
        scenario.map(|s| format!(", scenario {s}")).unwrap_or_default(),
        cli.inject_bug
            .map(|b| format!(", injected bug {b}"))
            .unwrap_or_default(),
        total - failed.len() as u64,
        failed.len(),
        wall,
        jobs
    );
    println!(
        "throughput: {:.0} simulated node-seconds per wall second ({:.0} simulated seconds of {} runs), {:.0} seeds per minute",
        cluster_ms as f64 / 1e3 / wall,
        sim_ms as f64 / 1e3,
        total,
        total as f64 / wall * 60.0
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        let list: Vec<String> = failed.iter().take(20).map(|o| o.options.seed.to_string()).collect();
        println!(
            "failing seeds: {}{}",
            list.join(" "),
            if failed.len() > 20 { " ..." } else { "" }
        );
        ExitCode::FAILURE
    }
}

/// `--real`: real-transport scenarios, one turmoil simulation per seed, on `--jobs` threads.
fn run_real(cli: &Cli) -> ExitCode {
    // The nodes log through `tracing`: RUST_LOG=cave=debug shows what each of them did (turmoil's span
    // names the host).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let fixed = match cli.scenario.as_str() {
        "all" => None,
        name => match real::Scenario::parse(name) {
            Some(sc) => Some(sc),
            None => {
                eprintln!("error: unknown real-transport scenario {name:?} (see --list)");
                return ExitCode::from(2);
            }
        },
    };
    let seeds = match cli.seed {
        Some(seed) => seed..seed + 1,
        None => match parse_seeds(&cli.seeds) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let fault = match cli
        .transport_fault
        .as_deref()
        .map(|name| (name, real::TransportFault::parse(name)))
    {
        None => None,
        Some((_, Some(fault))) => Some(fault),
        Some((name, None)) => {
            eprintln!("error: unknown transport fault {name:?} (see --list)");
            return ExitCode::from(2);
        }
    };
    let scenario_of =
        |seed: u64| fixed.unwrap_or(real::Scenario::ALL[(seed % real::Scenario::ALL.len() as u64) as usize]);
    let jobs = cli
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let started = Instant::now();
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= seeds.end {
                    return;
                }
                let scenario = scenario_of(seed);
                let result = real::run(scenario, seed, fault);
                match &result {
                    Ok(r) if cli.each || cli.seed.is_some() => println!(
                        "seed {seed} {:<14} nodes {} PASS  {:>5} acked {:>3} unknown  {:>2} keys diverged, converged {:>5.2}s after healing  \
                         sim {:>5.1}s  {} ms",
                        scenario.name(),
                        r.nodes,
                        r.acked,
                        r.unknown,
                        r.diverged_keys,
                        r.converged_secs,
                        r.sim_secs,
                        r.wall_ms
                    ),
                    Ok(_) => {}
                    Err(failure) => println!("FAIL {failure}"),
                }
                results.lock().unwrap().push((seed, result));
            });
        }
    });
    let results = results.into_inner().unwrap();
    let wall = started.elapsed().as_secs_f64();
    let sim: f64 = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|r| r.sim_secs)
        .sum();
    let mut failed: Vec<u64> = results.iter().filter(|(_, r)| r.is_err()).map(|(s, _)| *s).collect();
    failed.sort_unstable();
    println!(
        "{} real-transport seeds ({}..{}): {} passed, {} failed in {:.1} s on {} threads ({:.1} simulated s per wall s)",
        results.len(),
        seeds.start,
        seeds.end,
        results.len() - failed.len(),
        failed.len(),
        wall,
        jobs,
        sim / wall
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failing seeds: {failed:?}");
        ExitCode::FAILURE
    }
}
