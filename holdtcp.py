import socket,struct,sys,time,random
port=int(sys.argv[1]); nconn=int(sys.argv[2]); per=int(sys.argv[3]); hold=float(sys.argv[4])
def q(i,name):
    h=struct.pack(">HHHHHH",i&0xffff,0x0100,1,0,0,0)
    b=b"".join(bytes([len(l)])+l.encode() for l in name.split("."))+b"\0"
    m=h+b+struct.pack(">HH",16,1)
    return struct.pack(">H",len(m))+m
cs=[]
tag=random.randrange(1<<30)
for c in range(nconn):
    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,4096); s.connect(("127.0.0.1",port))
    s.sendall(b"".join(q(i,"r%d-%d-%d.w.big.test"%(tag,c,i)) for i in range(per)))
    cs.append(s)
time.sleep(hold)
