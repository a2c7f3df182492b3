//! `regiondns drill`: the command's side of a failover rehearsal ([`crate::drill`] runs it).

#[allow(clippy::wildcard_imports)]
use super::*;

/// `regiondns drill`: a line per client network (its answer before, while drained, and the
/// times), then the verdict; exits 1 when an answer did not move or come back in time.
pub fn drill(args: DrillArgs) -> Result<ExitCode> {
    let mut name = args.name;
    name.set_fqdn(true);
    let drill = Drill {
        admin: args.admin,
        token: admin_token(args.admin_token_file.as_deref())?,
        dns: args.dns,
        zone: args.zone,
        region: args.region,
        name,
        qtype: args.qtype,
        clients: args.clients,
        limit: args.limit.into(),
    };
    if args.dry_run {
        for (step, line) in drill.plan().iter().enumerate() {
            println!("{}. {line}", step + 1);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let outcomes = runtime.block_on(drill.run())?;
    let addresses = |list: &[std::net::IpAddr]| {
        let text: Vec<String> = list.iter().map(ToString::to_string).collect();
        if text.is_empty() {
            "nothing".to_owned()
        } else {
            text.join(" ")
        }
    };
    for outcome in &outcomes {
        let before = addresses(&outcome.before);
        let line = match (&outcome.moved, outcome.back) {
            (Some((during, moved)), Some(back)) => format!(
                "{before} -> {} after {:.2} s; back after {:.2} s",
                addresses(during),
                moved.as_secs_f64(),
                back.as_secs_f64()
            ),
            (Some((during, moved)), None) => format!(
                "{before} -> {} after {:.2} s; NOT BACK within {:?}",
                addresses(during),
                moved.as_secs_f64(),
                drill.limit
            ),
            (None, _) => format!("{before}: DID NOT MOVE within {:?}", drill.limit),
        };
        println!("{}: {line}", outcome.client);
    }
    let passed = outcomes.iter().all(|o| o.passed());
    println!(
        "{}: {} drained and undrained",
        if passed { "passed" } else { "FAILED" },
        drill.region
    );
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
