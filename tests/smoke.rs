mod common;
use common::TestServer;

#[test]
fn get_and_release_over_tcp_and_unix() {
    let server = TestServer::start();
    let mut a = server.connect();
    let mut b = server.connect_unix();
    assert_eq!(a.cmd("g foo"), "1 Lock Get Success: foo\n");
    assert_eq!(b.cmd("g foo"), "0 Lock Get Failure: foo\n");
    assert_eq!(b.cmd("me"), "1 unix:1 unix:1\n");
    drop(a);
    server.wait_for_stat("orphans", 1);
    assert_eq!(b.cmd("g foo"), "1 Lock Get Success: foo\n");
}
