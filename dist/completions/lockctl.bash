# bash completion for lockctl (lockctl completions bash)
_lockctl() {
    local cur="${COMP_WORDS[COMP_CWORD]}" cmd="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -S|--server|--mode|--io-timeout|--auth-file|--tls-ca|--tls-cert|--tls-key|-w|--timeout|--wait|-E|--conflict-exit-code|--limit|-c|--command|--kill-after|--workloads|--duration|--rounds|--connections|--contenders|--churners|--idle|--lockd|--server-pid|--tsv|--idle) ((i++)) ;;
            --) return ;;
            -*) ;;
            *) cmd="${COMP_WORDS[i]}"; break ;;
        esac
    done
    local words
    case "$cmd" in
        "") words="run hold status locks watch clients stats ping shell completions bench serve -S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version" ;;
        run) words="-S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version -x --exclusive -s --shared -n --nonblock --no-wait -w --timeout --wait -E --conflict-exit-code --semaphore --limit --verbose -c --command -o --close --kill-after" ;;
        hold) words="-S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version -x --exclusive -s --shared -n --nonblock --no-wait -w --timeout --wait -E --conflict-exit-code --semaphore --limit --verbose --json" ;;
        status) words="-S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version --json" ;;
        locks) words="-S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version --json" ;;
        watch) words="-S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version --json" ;;
        clients) words="-S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version --json" ;;
        stats) words="-S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version --json" ;;
        ping) words="-S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version --json" ;;
        shell) words="-S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version" ;;
        completions) words="-S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version bash zsh fish" ;;
        bench) words="-S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version --json --workloads --duration --rounds --connections --contenders --churners --idle --in-process --lockd --server-pid --no-echo --tsv" ;;
        serve) words="-S --server -L --local --mode --io-timeout --auth-file --tls-ca --tls-cert --tls-key -h --help --version --idle" ;;
        *) words="" ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _lockctl lockctl
