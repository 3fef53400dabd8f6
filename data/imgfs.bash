# bash completion for imgfs (imgfs copy, imgfs mount, imgfs wait).

_imgfs_copy() {
    local cur=$1 prev=$2
    case $prev in
        --order) COMPREPLY=($(compgen -W 'strict pipelined any' -- "$cur")); return ;;
        --source-format) COMPREPLY=($(compgen -W 'auto raw qcow2' -- "$cur")); return ;;
        --target-format) COMPREPLY=($(compgen -W 'raw qcow2' -- "$cur")); return ;;
        --requests|--request-size|--sparse|--cluster-size|--resume-from|--allow-backing)
            return ;;
        --state) _filedir; return ;;
    esac
    if [[ $cur == -* ]]; then
        local opts
        # the options of the imgfs on PATH, as its --help lists them
        opts=$(imgfs copy --help 2>/dev/null | grep -oE -- '(^| )--?[a-z][-a-z]*' | tr -d ' ' | sort -u)
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    COMPREPLY=($(compgen -W 'nfs:// iscsi:// null: zero:' -- "$cur"))
    _filedir
}

_imgfs_mount() {
    local cur=$1 prev=$2
    if [[ $prev == -o ]]; then
        local prefix=
        [[ $cur == *,* ]] && prefix=${cur%,*},
        COMPREPLY=($(compgen -P "$prefix" -W 'ro page_cache uid= gid= umask= allow_other allow_root state= nostate resume_jobs rate= memory= max_jobs=' -- "${cur##*,}"))
        compopt -o nospace
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W '-f -d -o --help' -- "$cur"))
        return
    fi
    _filedir -d
}

_imgfs() {
    local cur prev words cword
    _init_completion || return
    if (( cword == 1 )); then
        COMPREPLY=($(compgen -W 'copy mount wait --help --version' -- "$cur"))
        return
    fi
    case ${words[1]} in
        copy) _imgfs_copy "$cur" "$prev" ;;
        mount) _imgfs_mount "$cur" "$prev" ;;
        wait)
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W '--json --interval --help' -- "$cur"))
            elif [[ $prev != --interval ]]; then
                _filedir '@(job|status)'
            fi ;;
    esac
}
complete -F _imgfs imgfs
