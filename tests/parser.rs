
#[test]
fn random_lines_to_a_live_server() {
    let server = common::TestServer::start();
    let mut other = server.connect();
    for seed in seeds("random_lines_to_a_live_server", &[1]) {
        let mut rng = Rng::new(seed);
        let mut conn = server.connect();
        for batch in 0..200 {
            let mut lines = Vec::new();
            for _ in 0..10 {
                let mut line = if rng.chance(50) {
                    Verb::ALL[rng.below(Verb::ALL.len() as u64) as usize]
                        .as_str()
                        .as_bytes()
                        .to_vec()
                } else {
                    Vec::new()
                };
                line.push(b' ');
                line.extend(random_bytes(&mut rng, 8));
                line.push(b'\n');
                lines.extend(line);
            }
            // A reply nothing random can produce marks the end of the batch.
            lines.extend_from_slice(format!("g sync-{batch}\n").as_bytes());
            conn.send(&lines);
            let want = format!("1 Lock Get Success: sync-{batch}\n");
            loop {
                let line = conn.line();
                assert!(!line.is_empty(), "seed {seed:#x}: closed in batch {batch}");
                if line == want.as_bytes() {
                    break;
                }
            }
        }
        assert_eq!(other.cmd("ping"), "1 pong\n", "seed {seed:#x}");
    }
}
