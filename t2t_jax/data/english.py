"""A hand-written list of common English words (lower case).

Used by `cpcd.ArtistMasker`: an artist name made only of these words ("Yes", "Heart", "Future",
"Country Music", "The Cure") is not removed from prompts, because in a request it is far more often
the word than the artist.  `cpcd.EntityMasker` and `entity_check` use it for their exceptions (a
title that is one common word, a common word near a name is not a misspelling of it).  No packaged word-frequency list is a dependency of the core, and a short
explicit list keeps the rule reviewable: function words, frequent verbs/nouns/adjectives, the
words people use to describe music (moods, activities, genres, times), and contractions typed
without an apostrophe ("ive", "im").
"""

COMMON_WORDS = frozenset("""
a about above after again against ago ahead all almost alone along already also always am among an
and another any anyone anything are around as ask at away back bad be because been before behind
being below best better between big both but by can cannot could did do does doing done down during
each either else enough even ever every everyone everything few for from full further get gets give
go goes going gone good got great had has have having he her here hers herself him himself his how i
if in into is it its itself just keep kind last least less let like little lot lots made make many
may me might mine more most much must my myself near need never new next no none nor not nothing now
of off often old on once one only or other our ours out over own please quite rather really right
same say see she should since so some someone something soon still such sure take than that the their
them then there these they thing things this those though through thus till to too toward under
until up upon us very want was way we well were what when where which while who whom whose why will
with within without would yes yet you your yours yourself yeah okay ok hey hello hi thanks thank
maybe also instead

able act add age agree air alive allow answer area arm art bag ball band bank bar base bear beat
beautiful become bed begin believe bell belong bird birth bit black blood blow blue board boat body
bone book born bottom box boy brain bread break bright bring brother brown build burn business busy
buy call calm car care carry case cat catch cause center chance change charge cheap check child
children choose church city class clean clear close cloud cold color come common cool copy corner cost
count country couple course cover crazy create cross crowd cry cup cut dad daddy damn dark daughter
day days dead deal dear death deep die different dinner direct dirty doctor dog door double dream
dress drink drive drop dry early earth easy eat edge end energy escape evening event exactly eye
eyes face fact fade fall family famous far farm fast father fear feel feeling feet fight fill final
find fine finger finish fire first fish fit five flat floor flow flower fly follow food foot force
forest forever forget form four free fresh friend friends front fruit fun funny future game garden
gate gentle ghost gift girl girls glass gold golden gone grand grass green ground group grow guess
gun guy guys hair half hall hand hands hang happen happy hard head hear heart heat heaven heavy hell
help high hill history hit hold hole holiday home honey hope horse hot hour house huge human hundred
hurt ice idea important inside island job join joy jump kid kids kill king kiss kitchen knee know
knowledge lady lake land language large late later laugh law lay lead learn leave left leg life
lift light line list listen live lives local long look lose loss lost loud love lovely low lucky
machine mad main man mark market master matter mean meet memory men middle mile milk mind minute
miss mister moment money month moon morning mother mountain mouth move movie mr mrs music name
nation natural nature neck never nice night nine noise north nose note number ocean offer office
open order paper parent park part party pass past pay peace people perfect person pick picture piece
place plan plant play player point poison poor power present pretty price prince problem public pull
push put queen question quick quiet race radio rain raise reach read ready real reason red remember
rest return rich ride ring rise river road rock room rose round rule run sad safe salt sand save
school sea season second secret seem sell send sense serve set seven shadow shake shape share ship
shoe shop short shot show shut sick side sign silence silver simple sing single sister sit six size
skin sky sleep slow small smile smoke snow soft soldier son song songs soul sound south space speak
special speed spend spirit spring square stand star stars start state station stay step stone stop
store storm story strange street strong student study style sugar summer sun sweet swim system table
tail talk tall tank taste teach team tears tell ten test thank thick thin think third three throw
tide time tired today together tomorrow tonight top touch town toy train tree trip trouble truck true
trust truth try turn twelve twenty two type understand wait wake walk wall war warm wash watch water
wave weather week weekend weight west wet wheel white whole wide wife wild win wind window wine
winter wish woman women wonder wood word words work world worry write wrong year years young
youth zero

acoustic ambient anthem anthems background ballad ballads beats bedroom blues chill chilled
chillout christmas classic classical classics club cover covers dance dancing disco drive driving
easy electric emo epic energetic feel folk funk funky gospel groove grunge happy hip hop hits house
indie instrumental jazz karaoke latin lofi lounge mellow metal mix mood morning motivation nostalgia
nostalgic oldies party piano playlist pop punk rap rave reggae relax relaxing remix road romance
romantic sad sleep slow smooth soft soul soundtrack spice spicy study studying summer sunday swing
techno throwback trance tropical upbeat vibe vibes vintage vocal wedding workout focus meditate
meditation silk sublime cure doubt eagles poison vinyl live record records session sessions
atmosphere choir melody melodies movement movements lit logic fave favorite favourite police
survivor cake seal sting troop rogue vicious bush arty urban

ive im dont cant wont didnt doesnt isnt youre thats theres lets id ill
""".split())
